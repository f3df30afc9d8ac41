"""JSON encoding of inputs and outputs, with the size limit (DURABLE["MAX_PAYLOAD_BYTES"])."""

from __future__ import annotations

import json
import re
from typing import Any

from durable import journal
from durable.errors import InvalidInput, NotSerializable, PayloadTooLarge


# A JSON-escaped NUL (an odd number of backslashes before u0000): PostgreSQL's jsonb cannot hold it.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_size(encoded: str, what: str) -> str:
    limit = journal.max_payload()
    # len(str) <= bytes; only count bytes when the character count is near the limit
    if len(encoded) * 4 > limit and len(encoded.encode()) > limit:
        raise PayloadTooLarge(what, len(encoded.encode()), limit)
    return encoded


def storable(encoded: str, what: str) -> str | None:
    """Why the database could not store this JSON text on every backend, or None."""
    if "\\u0000" in encoded and _NUL.search(encoded):
        return f"{what} contains a NUL character (\\u0000), which the database cannot store"
    try:
        encoded.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} contains an unpaired surrogate character, which is not valid Unicode text"
    return None


def safe_text(text: str) -> str:
    """Error text (tracebacks of arbitrary exceptions) made storable: no NUL, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def encode_output(value: Any, what: str) -> str:
    try:
        encoded = journal.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} is not JSON-serialisable: {exc}") from None
    problem = storable(encoded, what)
    if problem:
        raise NotSerializable(problem)
    return check_size(encoded, what)


def encode_input(value: Any, what: str = "input") -> str:
    try:
        encoded = journal.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from None
    problem = storable(encoded, what)
    if problem:
        raise InvalidInput(problem)
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
    if storable(encoded, "arguments"):  # shown, not replayed: keep a storable rendering
        encoded = json.dumps({"repr": safe_text(repr(value))[: 64 * 1024]})
    if len(encoded) > 64 * 1024:
        encoded = json.dumps({"truncated": encoded[: 64 * 1024]})
    return encoded
