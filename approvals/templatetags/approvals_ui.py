"""Template helpers of the approval inbox: the pending count in the navigation bar, durations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils import timezone

from approvals import inbox
from approvals.presenters import duration

register = template.Library()

# Pages whose own socket (/ws/approvals/?view=inbox|detail) already keeps the count current.
LIVE_PAGES = {"inbox", "detail"}


@register.inclusion_tag("approvals/_nav_count.html", takes_context=True)
def approvals_nav(context: Any) -> dict[str, Any]:
    """The reviewer's pending count, kept current by a small socket on pages that have none."""
    request = context.get("request")
    user = context.get("user")
    match = getattr(request, "resolver_match", None)
    own_socket = match is not None and match.namespace == "approvals" and match.url_name in LIVE_PAGES
    return {"count": inbox.pending_count(user) if user is not None else 0, "socket": not own_socket}


@register.filter
def ms_until(value: dt.datetime | None) -> float | None:
    """Milliseconds from now until `value` (0 once it has passed)."""
    if value is None:
        return None
    return max((value - timezone.now()).total_seconds() * 1000, 0.0)


@register.filter
def seconds(value: float | None) -> str:
    return "–" if value is None else duration(value)
