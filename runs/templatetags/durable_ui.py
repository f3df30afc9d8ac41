"""Small formatting helpers for the run browser templates. None of them marks anything safe."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from runs.presenters import format_ms

register = template.Library()

STATUS_TONES = {
    "queued": "neutral",
    "running": "info",
    "pausing": "warn",
    "paused": "warn",
    "waiting": "wait",
    "waiting_approval": "wait",
    "succeeded": "good",
    "failed": "bad",
    "cancelled": "muted",
    "dead": "bad",
    "definition_changed": "warn",
    "outcome_unknown": "warn",
    "attention": "warn",
    # step statuses
    "completed": "good",
    "error": "warn",
    "started": "info",
}


@register.filter
def ms(value: Any) -> str:
    """Milliseconds as a short human duration: 850 ms, 2.1 s, 3 min 4 s."""
    return format_ms(float(value)) if value is not None else "–"


@register.filter
def num(value: Any) -> str:
    """A plain number for CSS custom properties (no localisation, no thousands separator)."""
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return "0"


@register.filter
def tone(status: str) -> str:
    return STATUS_TONES.get(status, "neutral")


@register.filter
def iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value else ""


@register.filter
def clock(value: dt.datetime | None) -> str:
    """Time of day with milliseconds, in UTC (the timeline's resolution)."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"


@register.simple_tag
def url_or(name: str, fallback: str, *args: Any) -> str:
    """reverse(name) if that URL exists (another app may not be installed yet), else the fallback."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return fallback


@register.simple_tag
def query(params: list[tuple[str, str]] | None, drop: str = "", **extra: Any) -> str:
    """A query string from the list's filter params, without the names in `drop` (comma separated)
    and with `extra` added (empty values are left out). Escaped by the template like any text."""
    dropped = {name for name in drop.split(",") if name} | set(extra)
    items = [(name, value) for name, value in params or [] if name not in dropped]
    items += [(name, str(value)) for name, value in extra.items() if value not in (None, "")]
    return urlencode(items)


@register.filter
def status_label(status: str) -> str:
    return str(status).replace("_", " ")


@register.filter
def sum_values(values: Any) -> int:
    return sum(values)


@register.filter
def ms_since(end: dt.datetime | None, start: dt.datetime | None) -> float | None:
    """`{{ end|ms_since:start }}`: milliseconds from start to end."""
    if end is None or start is None:
        return None
    return (end - start).total_seconds() * 1000


@register.filter
def ms_to_now(start: dt.datetime | None) -> float | None:
    if start is None:
        return None
    return (timezone.now() - start).total_seconds() * 1000
