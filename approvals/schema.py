"""Edited arguments are checked with the same validator the agents use for model-proposed ones
(types, required, enums and the bounds a hand-written schema sets, like a refund's maximum)."""

from __future__ import annotations

from typing import Any

from durable.tools import validate as errors_of


class SchemaError(ValueError):
    pass


def validate(value: Any, schema: dict[str, Any]) -> None:
    errors = errors_of(value, schema)
    if errors:
        raise SchemaError("; ".join(errors))
