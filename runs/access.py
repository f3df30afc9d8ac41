"""Who may see and steer runs. Every view and websocket consumer asks here first.

Runs are shared by design: anyone with `durable.view_run` sees every run. Controls (start, pause,
resume, cancel, retry) need `durable.control_run`. Full tracebacks can carry secrets from a tool's
environment, so they are shown to controllers and staff only; everyone else gets the last line.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from durable.models import Run
from runs.roles import CONTROL_RUNS, VIEW_RUNS


def can_view_runs(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.has_perm(VIEW_RUNS))


def can_control_runs(user: Any) -> bool:
    return can_view_runs(user) and user.has_perm(CONTROL_RUNS)


def can_see_tracebacks(user: Any) -> bool:
    return can_view_runs(user) and (user.is_staff or user.has_perm(CONTROL_RUNS))


def check_runs_permission(user: Any, *, control: bool = False) -> None:
    """Raise PermissionDenied unless the user may view (or, with control=True, steer) runs."""
    allowed = can_control_runs(user) if control else can_view_runs(user)
    if not allowed:
        raise PermissionDenied("you do not have permission to " + ("control runs" if control else "view runs"))


def get_run_for_user(user: Any, run_id: Any, *, control: bool = False, fields: tuple[str, ...] = ()) -> Run:
    """The run, after the permission check (so that ids cannot be probed without permission).

    Raises PermissionDenied, then Http404 for an unknown id.
    """
    check_runs_permission(user, control=control)
    queryset = Run.objects.select_related("started_by", "parent")
    if fields:
        queryset = queryset.only(*fields)
    try:
        return queryset.get(pk=int(run_id))
    except (Run.DoesNotExist, TypeError, ValueError, OverflowError):
        raise Http404(f"no run {run_id}") from None
