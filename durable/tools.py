"""Tools an agent's model can call: `@tool` turns a typed Python function into a JSON-schema'd tool.

The schema comes from the function's type hints and docstring; the arguments a model proposes are
checked against it by `validate` (a small validator for exactly the subset `schema_for` generates:
types, required, enums, arrays, nested objects) before the tool runs. A parameter annotated
`ToolContext` is not part of the schema: the agent fills it with the run, the step's idempotency key
and the run input.

    @tool
    def lookup_order(order_id: str, include_items: bool = False) -> dict:
        '''Look up an order.

        Args:
            order_id: the order number, like "A-1001"
        '''

    @tool(at_most_once=True, requires_approval=True)
    def send_payment(amount: float, currency: Literal["EUR", "USD"]) -> dict: ...
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from durable.context import RetryPolicy, current_step

JSON = dict[str, Any]
# requires_approval: True, an approvals.policies.ApprovalPolicy, or a function of the arguments that
# returns either (a falsy value: no approval needed for this call), e.g. refunds over 100.
ApprovalRule = Callable[[dict[str, Any]], Any]
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI and Anthropic accept as a tool name
TOOL_RETRY = RetryPolicy(max_attempts=1)  # a failing tool goes back to the model, which decides


@dataclass(frozen=True)
class ToolContext:
    """Given to a tool that declares a parameter of this type (it is left out of the schema)."""

    run_id: int
    seq: int
    idempotency_key: str  # "<run id>:<seq>": the same on every attempt; pass it to external services
    attempt: int
    agent: str
    input: Any  # the run's input


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: JSON  # JSON schema of the arguments object
    fn: Callable[..., Any]
    transactional: bool = False  # runs inside the checkpoint transaction: exactly once
    at_most_once: bool = False  # a cut-off call stops the run as outcome_unknown for a person
    requires_approval: Any = False  # True, an ApprovalPolicy, or an ApprovalRule
    retry: RetryPolicy = TOOL_RETRY
    context_param: str | None = None  # the ToolContext parameter's name, if any
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def approval_for(self, arguments: dict[str, Any]) -> Any:
        """The ApprovalPolicy that applies to this call, or None when it needs no approval."""
        from approvals.policies import ApprovalPolicy

        rule = self.requires_approval
        decision = rule(arguments) if callable(rule) and not isinstance(rule, ApprovalPolicy) else rule
        if isinstance(decision, ApprovalPolicy):
            return decision
        return ApprovalPolicy() if decision else None

    def needs_approval(self, arguments: dict[str, Any]) -> bool:
        return self.approval_for(arguments) is not None

    def approval_mark(self) -> Any:
        from approvals.policies import ApprovalPolicy

        if isinstance(self.requires_approval, ApprovalPolicy):
            return self.requires_approval.as_dict()
        if callable(self.requires_approval):
            return f"policy:{_qualname(self.requires_approval)}"
        return bool(self.requires_approval)

    def spec(self) -> JSON:
        """What the model is shown plus the durable flags: part of the agent's version hash (the retry
        policy is not: changing it does not change what a run does, only how hard it tries)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "transactional": self.transactional,
            "at_most_once": self.at_most_once,
            "requires_approval": self.approval_mark(),
            **({"meta": dict(self.meta)} if self.meta else {}),
        }

    def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        kwargs = dict(arguments)
        if self.context_param:
            kwargs[self.context_param] = context
        return self.fn(**kwargs)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    transactional: bool = False,
    at_most_once: bool = False,
    requires_approval: Any = False,
    retry: RetryPolicy | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Any:
    """Make a tool of a function: `@tool` or `@tool(at_most_once=True, requires_approval=True, ...)`."""
    if transactional and at_most_once:
        raise ValueError("a tool is either transactional (exactly once) or at_most_once, not both")

    def build(func: Callable[..., Any]) -> Tool:
        tool_name = name or func.__name__
        if not NAME_RE.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'")
        summary, param_docs = parse_docstring(func.__doc__ or "")
        parameters, context_param = parameters_schema(func, param_docs)
        return Tool(
            name=tool_name,
            description=description if description is not None else summary,
            parameters=parameters,
            fn=func,
            transactional=transactional,
            at_most_once=at_most_once,
            requires_approval=requires_approval,
            retry=retry or TOOL_RETRY,
            context_param=context_param,
            meta=dict(meta or {}),
        )

    return build(fn) if fn is not None else build


def as_tool(value: Tool | Callable[..., Any]) -> Tool:
    return value if isinstance(value, Tool) else tool(value)


def run_tool(tool_def: Tool, arguments: dict[str, Any], agent: str, run_input: Any) -> Any:
    """The body of a tool step: the tool with its validated arguments (and its ToolContext)."""
    step = current_step()
    context = ToolContext(
        run_id=step.run_id if step else 0,
        seq=step.seq if step else 0,
        idempotency_key=step.idempotency_key if step else "",
        attempt=step.attempt if step else 1,
        agent=agent,
        input=run_input,
    )
    return tool_def.invoke(arguments, context)


# -- schemas from type hints ---------------------------------------------------------------------------


def parameters_schema(func: Callable[..., Any], docs: Mapping[str, str]) -> tuple[JSON, str | None]:
    """The JSON schema of a function's keyword arguments, and the name of its ToolContext parameter."""
    hints = typing.get_type_hints(func, include_extras=False)
    properties: JSON = {}
    required: list[str] = []
    context_param = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {func.__name__}: *args and **kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext or ToolContext in typing.get_args(annotation):
            context_param = param.name
            continue
        prop = schema_for(annotation, f"{func.__name__}({param.name})")
        if param.name in docs:
            prop = {**prop, "description": docs[param.name]}
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif _is_json(param.default):
            prop = {**prop, "default": param.default}
        properties[param.name] = prop
    schema: JSON = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema, context_param


def schema_for(tp: Any, where: str = "") -> JSON:
    """JSON schema of a type: str, int, float, bool, None, Any, list[T], tuple[T, ...], dict[str, T],
    Literal[...], Enum, T | None and TypedDict (nested)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is type(None) or tp is None:
        return {"type": "null"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp in (list, tuple, set, frozenset):
        return {"type": "array"}
    if tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([member.value for member in tp])
    if typing.is_typeddict(tp):
        return _typeddict_schema(tp, where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _enum_schema(list(args))
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1:
            inner = schema_for(options[0], where)
            return _nullable(inner) if nullable else inner
        return {"anyOf": [schema_for(a, where) for a in args]}
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return {"type": "array", "items": schema_for(args[0], where)} if args else {"type": "array"}
    if origin is tuple:
        raise TypeError(f"{where}: use tuple[T, ...] or list[T]; fixed-length tuples are not supported")
    if origin in (dict, Mapping) or origin is typing.Mapping:
        if args and args[0] is not str:
            raise TypeError(f"{where}: JSON object keys are strings; use dict[str, T]")
        return {"type": "object", "additionalProperties": schema_for(args[1], where)} if args else {"type": "object"}
    if origin is typing.Annotated:
        return schema_for(args[0], where)
    raise TypeError(f"{where}: type {tp!r} cannot be described as JSON schema")


def _enum_schema(values: list[Any]) -> JSON:
    kinds = {_json_type(v) for v in values}
    schema: JSON = {"enum": values}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), "enum": values}
    return schema


def _nullable(schema: JSON) -> JSON:
    kind = schema.get("type")
    if isinstance(kind, str):
        out = {**schema, "type": [kind, "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def _typeddict_schema(tp: Any, where: str) -> JSON:
    properties: JSON = {}
    required: list[str] = []
    # NotRequired/Required are read from the hints too: with `from __future__ import annotations` the
    # class's own __required_keys__ does not see them.
    for key, hint in typing.get_type_hints(tp, include_extras=True).items():
        marker = typing.get_origin(hint)
        if marker in (typing.NotRequired, typing.Required):
            hint = typing.get_args(hint)[0]
        if marker is typing.Required or (marker is not typing.NotRequired and key in tp.__required_keys__):
            required.append(key)
        properties[key] = schema_for(hint, f"{where}.{key}")
    schema: JSON = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


SECTION_RE = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$")
GOOGLE_ITEM_RE = re.compile(r"^\s{1,4}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")  # "    name (type): text"
SPHINX_ITEM_RE = re.compile(r"^:param\s+(?:\S+\s+)?(\w+):\s*(.*)$")  # ":param str name: text"


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and per-parameter descriptions, from a Google-style
    `Args:` section or Sphinx-style `:param name: text` lines. Continuation lines are joined."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section = "summary"  # summary | args | sphinx | other
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        stripped = line.strip()
        sphinx = SPHINX_ITEM_RE.match(stripped)
        header = SECTION_RE.match(line)
        if sphinx:
            section, current = "sphinx", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif stripped.startswith(":"):
            section, current = "other", None  # :returns:, :raises:
        elif header:
            section, current = ("args" if header.group(1) in ("Args", "Arguments", "Parameters") else "other"), None
        elif section == "args" and GOOGLE_ITEM_RE.match(line):
            item = GOOGLE_ITEM_RE.match(line)
            assert item is not None
            current = item.group(1)
            params[current] = item.group(2).strip()
        elif section in ("args", "sphinx"):
            if current and stripped:
                params[current] = f"{params[current]} {stripped}".strip()
        elif section == "summary":
            summary.append(line)
    return "\n".join(summary).strip(), params


# -- validation ------------------------------------------------------------------------------------------


def _bounds(value: Any, schema: JSON, path: str) -> list[str]:
    """minimum/maximum, string and array lengths: hand-written schemas (a refund's amount, an
    approval's edited arguments) use them; signatures do not produce them."""
    errors: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is more than the maximum {schema['maximum']}")
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
    return errors



def validate(value: Any, schema: JSON, path: str = "$") -> list[str]:
    """Errors of `value` against a schema of the subset above; an empty list when it is valid."""
    errors: list[str] = []
    if "anyOf" in schema:
        if all(validate(value, option, path) for option in schema["anyOf"]):
            expected = " or ".join(_describe(option) for option in schema["anyOf"])
            errors.append(f"{path}: expected {expected}, got {_json_type(value)} ({_short(value)})")
        return errors
    kind = schema.get("type")
    if kind is not None:
        allowed = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in allowed):
            errors.append(f"{path}: expected {' or '.join(allowed)}, got {_json_type(value)} ({_short(value)})")
            return errors
    if "enum" in schema and value not in schema["enum"]:
        options = ", ".join(repr(option) for option in schema["enum"])
        errors.append(f"{path}: {_short(value)} is not one of {options}")
        return errors
    errors += _bounds(value, schema, path)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        what = "argument" if path == "$" else "property"
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {what} {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in properties:
                errors += validate(item, properties[key], where)
            elif extra is False:
                known = ", ".join(properties) or "none"
                errors.append(f"{path}: unexpected {what} {key!r} (expected: {known})")
            elif isinstance(extra, dict):
                errors += validate(item, extra, where)
    return errors


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _json_type(value) == kind


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(schema: JSON) -> str:
    kind = schema.get("type", "any")
    return "/".join(kind) if isinstance(kind, list) else str(kind)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
