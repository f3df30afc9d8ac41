"""Edited arguments are checked with the same validator the agents use for model-proposed ones, plus
the bounds a reviewer's edit must not cross (minimum/maximum, string and array lengths), which tool
signatures do not produce but hand-written approval schemas (a refund's amount) do."""

from __future__ import annotations

from typing import Any

from durable.tools import validate as errors_of


class SchemaError(ValueError):
    pass


def validate(value: Any, schema: dict[str, Any]) -> None:
    errors = errors_of(value, schema) or bounds(value, schema)
    if errors:
        raise SchemaError("; ".join(errors))


def bounds(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of the bound keywords (the types are already known to be right)."""
    errors: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is more than the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        for index, item in enumerate(value):
            errors += bounds(item, schema.get("items") or {}, f"{path}[{index}]")
    if isinstance(value, dict):
        for key, item in value.items():
            sub = (schema.get("properties") or {}).get(key)
            if isinstance(sub, dict):
                errors += bounds(item, sub, f"{path}.{key}")
    return errors
