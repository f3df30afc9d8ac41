"""JSON encoding of inputs and outputs, with the size limit (DURABLE["MAX_PAYLOAD_BYTES"])."""

from __future__ import annotations

import json
from typing import Any

from durable import journal
from durable.errors import InvalidInput, NotSerializable, PayloadTooLarge


def check_size(encoded: str, what: str) -> str:
    limit = journal.max_payload()
    # len(str) <= bytes; only count bytes when the character count is near the limit
    if len(encoded) * 4 > limit and len(encoded.encode()) > limit:
        raise PayloadTooLarge(what, len(encoded.encode()), limit)
    return encoded


def encode_output(value: Any, what: str) -> str:
    try:
        encoded = journal.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} is not JSON-serialisable: {exc}") from None
    return check_size(encoded, what)


def encode_input(value: Any, what: str = "input") -> str:
    try:
        encoded = journal.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from None
    return check_size(encoded, what)


def parse_json(text: str, what: str = "input") -> Any:
    """Parse JSON given by a person (command line, form, API) with a message that says where."""
    if len(text.encode()) > journal.max_payload():
        raise PayloadTooLarge(what, len(text.encode()), journal.max_payload())
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def describe_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The step's arguments as JSON for the timeline; values JSON cannot hold are shown by repr."""
    if not args and not kwargs:
        return None
    value = {"args": list(args), "kwargs": kwargs} if kwargs else {"args": list(args)}
    encoded = json.dumps(value, default=repr, separators=(",", ":"), ensure_ascii=False)
    if len(encoded) > 64 * 1024:
        encoded = json.dumps({"truncated": encoded[: 64 * 1024]})
    return encoded
