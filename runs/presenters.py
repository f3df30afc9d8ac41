"""What the run detail shows, computed once per request (or per websocket batch) in a fixed number of
queries, so that a run with thousands of steps renders without a query per step.

The page and the websocket consumer both build their template contexts here and render the same
partials (_header.html, _step.html, _recovery.html, _event.html, _axis.html).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from durable.models import TERMINAL, Event, Run, Status, Step, StepStatus

# Fields of a step the timeline needs: input and output stay in the database until a step is opened.
STEP_FIELDS = ("id", "run_id", "seq", "name", "kind", "status", "error", "attempts", "epoch", "worker",
               "started_at", "finished_at", "wake_at")
EVENTS_ON_PAGE = 200
STEPS_ON_PAGE = 300  # the newest steps; earlier ones load in chunks of STEPS_PER_CHUNK
STEPS_PER_CHUNK = 500
JSON_DISPLAY_LIMIT = 200_000  # characters of pretty JSON shown in the page; more is cut with a note
CHILDREN_LIMIT = 200
def statuses(*names: str) -> tuple[str, ...]:
    """The named statuses the engine defines (it grows new ones; a missing name is skipped)."""
    return tuple(getattr(Status, name) for name in names if hasattr(Status, name))


# Mirrors the WHERE clauses of durable.control; the engine still decides (a refusal is shown).
CONTROL_STATUSES: dict[str, tuple[str, ...]] = {
    "pause": statuses("QUEUED", "RUNNING", "WAITING", "WAITING_APPROVAL"),
    "resume": statuses("PAUSED", "PAUSING", "DEAD", "DEFINITION_CHANGED", "ATTENTION"),
    "cancel": tuple(s for s in Status.values if s not in TERMINAL),
    "retry": statuses("FAILED", "DEAD"),
}
CONTROL_CONFIRM = {
    "pause": "Pause run {id}? It stops at the next step boundary.",
    "resume": "Resume run {id}? (A run whose definition changed continues on the new definition.)",
    "cancel": "Cancel run {id}? This cannot be undone; its child runs are cancelled too.",
    "retry": "Retry run {id} from its failed step?",
}


def ms_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000


def pretty_json(value: Any) -> tuple[str, bool]:
    """Indented JSON for display (escaped by the template), and whether it was cut."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=repr)
    if len(text) > JSON_DISPLAY_LIMIT:
        return text[:JSON_DISPLAY_LIMIT], True
    return text, False


def last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@dataclass
class Viewer:
    """What the current user may see and do; decided once per request or socket."""

    can_control: bool
    can_see_tracebacks: bool


@dataclass
class StepView:
    """A step row, with every display string computed here: the timeline of a 2,000-step run is
    2,000 renders of _step.html, so the template only prints (no filters, no {% url %})."""

    step: Step
    url: str
    offset_ms: float
    duration_ms: float | None
    error_tail: str
    error_full: str  # empty unless the viewer may see tracebacks

    @property
    def dom_id(self) -> str:
        return f"step-{self.step.seq}"

    @property
    def is_open(self) -> bool:
        return self.step.finished_at is None

    @property
    def tone(self) -> str:
        return STEP_TONES.get(self.step.status, "neutral")

    @property
    def duration(self) -> str:
        return format_ms(self.duration_ms)

    @property
    def at(self) -> str:
        return f"{self.offset_ms:.1f}"

    @property
    def len(self) -> str:
        return f"{self.duration_ms or 0:.1f}"


STEP_TONES = {"completed": "good", "failed": "bad", "error": "warn", "waiting": "wait", "started": "info"}


@dataclass
class RecoveryView:
    event_seq: int
    at_step: int
    previous_owner: str
    epoch: int
    lease_expired_at: dt.datetime | None
    recovered_at: dt.datetime
    dead: bool = False
    new_owner: str = ""
    claimed_at: dt.datetime | None = None
    silent_since: dt.datetime | None = None  # last sign of life: lease expiry minus the lease length
    offset_ms: float = 0.0
    gap_ms: float | None = None

    @property
    def dom_id(self) -> str:
        return f"recovery-{self.event_seq}"


@dataclass
class Axis:
    origin: dt.datetime | None
    span_ms: float
    ticks: list[tuple[float, float]] = field(default_factory=list)  # (percent, ms)


def axis_for(run: Run, steps: list[Step], now: dt.datetime) -> Axis:
    # The first claim (queueing time is in the header). It is set once, before the first step, so
    # it never moves under bars a page already shows; a run not started yet has no bars.
    origin = run.started_at or run.created_at
    if origin is None:
        return Axis(None, 1.0)
    end = run.finished_at or (now if run.status not in TERMINAL else None)
    candidates = [s.finished_at or s.started_at for s in steps if s.started_at]
    if end is not None:
        candidates.append(end)
    latest = max(candidates, default=origin)
    span = max(ms_between(origin, latest) or 0.0, 1.0)
    return Axis(origin, span, [(p, span * p / 100) for p in (0, 25, 50, 75, 100)])


def step_view(step: Step, origin: dt.datetime | None, viewer: Viewer, url_prefix: str = "") -> StepView:
    offset = ms_between(origin, step.started_at) or 0.0
    return StepView(
        step=step,
        url=f"{url_prefix or step_url_prefix(step.run_id)}{step.seq}/",
        offset_ms=max(offset, 0.0),
        duration_ms=ms_between(step.started_at, step.finished_at),
        error_tail=last_line(step.error),
        error_full=step.error if viewer.can_see_tracebacks else "",
    )


def step_url_prefix(run_id: int) -> str:
    """`/runs/<id>/steps/`: reversed once per run, not once per step."""
    return reverse("runs:step", args=[run_id, 0])[:-2]


def steps_of(run: Run) -> QuerySet[Step]:
    return Step.objects.filter(run_id=run.pk).only(*STEP_FIELDS).order_by("seq")


def recoveries_of(run: Run, origin: dt.datetime | None) -> list[RecoveryView]:
    """Each recovery with the claim that ended it: "worker X stopped answering; worker Y took over
    at step 7 after 2.1 s". The gap runs from the dead worker's last lease renewal (its lease expiry
    minus the lease length) to the next claim."""
    events = list(
        Event.objects.filter(run_id=run.pk, type__in=("run.recovered", "run.dead_lettered", "run.claimed"))
        .only("seq", "type", "data", "created_at")
        .order_by("seq")
    )
    lease = dt.timedelta(seconds=float(settings.DURABLE["LEASE_SECONDS"]))
    views: list[RecoveryView] = []
    pending: RecoveryView | None = None
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "run.claimed":
            if pending is not None:
                pending.new_owner = str(data.get("worker", ""))
                pending.claimed_at = event.created_at
                pending = None
            continue
        expired = _parse_time(data.get("lease_expired_at"))
        view = RecoveryView(
            event_seq=event.seq,
            at_step=_int(data.get("at_step")),
            previous_owner=str(data.get("previous_owner", "")),
            epoch=_int(data.get("epoch")),
            lease_expired_at=expired,
            recovered_at=event.created_at,
            dead=event.type == "run.dead_lettered",
            silent_since=(expired - lease) if expired else None,
        )
        views.append(view)
        pending = None if view.dead else view
    for view in views:
        start = view.silent_since or view.recovered_at
        view.offset_ms = max(ms_between(origin, start) or 0.0, 0.0)
        view.gap_ms = ms_between(start, view.claimed_at)
    return views


def timeline(steps: list[StepView], recoveries: list[RecoveryView]) -> list[tuple[str, Any]]:
    """Steps and recoveries in journal order; a recovery sits before the step it resumed at."""
    items: list[tuple[str, Any]] = []
    pending = sorted(recoveries, key=lambda r: (r.at_step, r.event_seq))
    index = 0
    for view in steps:
        while index < len(pending) and pending[index].at_step <= view.step.seq:
            items.append(("recovery", pending[index]))
            index += 1
        items.append(("step", view))
    items.extend(("recovery", r) for r in pending[index:])
    return items


def controls_for(run: Run, viewer: Viewer) -> list[dict[str, str]]:
    if not viewer.can_control:
        return []
    return [
        {"action": action, "confirm": CONTROL_CONFIRM[action].format(id=run.pk)}
        for action, statuses in CONTROL_STATUSES.items()
        if run.status in statuses
    ]


def header_context(run: Run, viewer: Viewer, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    running_end = run.finished_at or (now if run.started_at and run.status not in TERMINAL else None)
    lease_live = bool(run.lease_owner and run.lease_expires_at)
    return {
        "run": run,
        "viewer": viewer,
        "controls": controls_for(run, viewer),
        "total_ms": ms_between(run.created_at, run.finished_at),
        "run_ms": ms_between(run.started_at, running_end),
        "queued_ms": ms_between(run.created_at, run.started_at),
        "is_live": run.status not in TERMINAL,
        "lease_live": lease_live,
        "lease_expired": lease_live and run.lease_expires_at is not None and run.lease_expires_at < now,
        "unknown_step": run.steps.filter(status=StepStatus.STARTED).order_by("-seq").first()
        if run.status == Status.OUTCOME_UNKNOWN and viewer.can_control else None,
        "error_tail": last_line(run.error),
        "error_full": run.error if viewer.can_see_tracebacks else "",
    }


def event_summary(event: Event) -> str:
    """One plain-text line per event (escaped by the template like everything stored)."""
    data = event.data if isinstance(event.data, dict) else {}
    by = f" by {data['by']}" if data.get("by") else ""
    kind = event.type
    if kind.startswith("step."):
        text = f"step {data.get('seq')} {data.get('name', '')} {kind[5:]}"
        if data.get("ms") is not None:
            text += f" in {format_ms(float(data['ms']))}"
        if data.get("attempts", 1) and int(data.get("attempts") or 1) > 1:
            text += f" (attempt {data['attempts']})"
        if data.get("error"):
            text += f": {data['error']}"
        return text
    summaries = {
        "run.created": lambda: f"created: {data.get('workflow', '')} v{data.get('version', '')}{by}",
        "run.claimed": lambda: f"claimed by worker {data.get('worker', '?')} (epoch {data.get('epoch', '?')})",
        "run.recovered": lambda: (
            f"worker {data.get('previous_owner') or '?'} stopped answering; "
            f"its lease expired, run queued again at step {data.get('at_step', '?')}"
        ),
        "run.dead_lettered": lambda: (
            f"worker {data.get('previous_owner') or '?'} stopped answering again; dead-lettered after "
            f"{data.get('stalls', '?')} recoveries without progress"
        ),
        "run.pause_requested": lambda: f"pause requested{by}",
        "run.paused": lambda: f"paused at step {data.get('at_step', '?')}",
        "run.resumed": lambda: f"resumed{by}",
        "run.cancelled": lambda: f"cancelled{by}" + (f": {data['reason']}" if data.get("reason") else ""),
        "run.retried": lambda: f"retried{by}" + (f" (steps {data.get('steps')})" if data.get("steps") else ""),
        "run.yielded": lambda: f"slice ended at step {data.get('at_step', '?')}; queued again",
        "run.backoff": lambda: f"waiting to retry step {data.get('at_step', '?')}",
        "run.waiting": lambda: f"waiting: {data.get('kind', '')} {data.get('name', '')}".rstrip()
        + (f" until {data['until']}" if data.get("until") else ""),
        "run.woken": lambda: f"woken: {data.get('reason', '')}",
        "run.succeeded": lambda: "succeeded",
        "run.failed": lambda: "failed" + (f": {data['error']}" if data.get("error") else ""),
        "event.received": lambda: f"event {data.get('name', '')!s} received{by}",
    }
    maker = summaries.get(kind)
    return maker() if maker else kind


def event_context(event: Event) -> dict[str, Any]:
    return {
        "event": event,
        "summary": event_summary(event),
        "data_json": json.dumps(event.data, ensure_ascii=False, default=repr)[:2000] if event.data else "",
        "tone": _event_tone(event.type),
    }


def _event_tone(kind: str) -> str:
    if kind in ("run.failed", "step.failed", "run.dead_lettered", "step.error"):
        return "bad"
    if kind in ("run.recovered", "run.cancelled", "run.pause_requested", "run.paused"):
        return "warn"
    if kind in ("run.succeeded", "step.completed"):
        return "good"
    return ""


def recent_events(run: Run, *, before: int | None = None, limit: int | None = None) -> tuple[list[Event], bool]:
    """The newest `limit` events (before a seq), oldest first, and whether earlier ones exist."""
    limit = limit or EVENTS_ON_PAGE
    queryset = Event.objects.filter(run_id=run.pk)
    if before is not None:
        queryset = queryset.filter(seq__lt=before)
    rows = list(queryset.order_by("-seq")[: limit + 1])
    return list(reversed(rows[:limit])), len(rows) > limit


@dataclass
class TreeNode:
    run: Run
    children: list[TreeNode] = field(default_factory=list)


def run_family(run: Run) -> tuple[list[Run], list[TreeNode], bool]:
    """Ancestors (root first) and the tree of descendants, one query per level; capped in size."""
    ancestors: list[Run] = []
    parent_id = run.parent_id
    seen = {run.pk}
    while parent_id is not None and parent_id not in seen and len(ancestors) < 20:
        parent = Run.objects.only("id", "workflow", "status", "parent_id").filter(pk=parent_id).first()
        if parent is None:
            break
        ancestors.insert(0, parent)
        seen.add(parent.pk)
        parent_id = parent.parent_id
    nodes = {run.pk: TreeNode(run)}
    level = [run.pk]
    total, truncated = 0, False
    while level and not truncated:
        children = list(
            Run.objects.filter(parent_id__in=level)
            .only("id", "workflow", "status", "parent_id", "next_seq", "created_at")
            .order_by("created_at", "id")[: CHILDREN_LIMIT - total + 1]
        )
        if total + len(children) > CHILDREN_LIMIT:
            children, truncated = children[: CHILDREN_LIMIT - total], True
        level = []
        for child in children:
            if child.pk in nodes:
                continue
            node = TreeNode(child)
            nodes[child.pk] = node
            nodes[child.parent_id].children.append(node)  # type: ignore[index]
            level.append(child.pk)
        total += len(children)
    return ancestors, nodes[run.pk].children, truncated


def steps_window(run: Run, *, before: int | None = None, limit: int) -> tuple[list[Step], bool]:
    """The last `limit` steps (before a seq), in journal order, and whether earlier ones exist.
    One range scan of the step_run_seq index."""
    queryset = steps_of(run)
    if before is not None:
        queryset = queryset.filter(seq__lt=before)
    rows = list(queryset.order_by("-seq")[: limit + 1])
    return list(reversed(rows[:limit])), len(rows) > limit


def timeline_context(
    run: Run, viewer: Viewer, *, before: int | None = None, limit: int, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A window of the timeline: steps and the recoveries that happened among them. The page shows
    the newest STEPS_ON_PAGE steps; earlier ones load in chunks ("Show earlier steps"), so a run with
    thousands of steps renders in a bounded time."""
    steps, earlier = steps_window(run, before=before, limit=limit)
    axis = axis_for(run, steps, now or timezone.now())
    prefix = step_url_prefix(run.pk)
    first = steps[0].seq if steps else (before if before is not None else run.next_seq)
    recoveries = [
        r for r in recoveries_of(run, axis.origin)
        if (not earlier or r.at_step >= first) and (before is None or r.at_step < before)
    ]
    return {
        "run": run,
        "axis": axis,
        "timeline": timeline([step_view(s, axis.origin, viewer, prefix) for s in steps], recoveries),
        "earlier_steps": earlier,
        "first_step_seq": first,
    }


def detail_context(run: Run, viewer: Viewer) -> dict[str, Any]:
    now = timezone.now()
    events, earlier = recent_events(run)
    ancestors, children, children_truncated = run_family(run)
    return {
        **header_context(run, viewer, now),
        **timeline_context(run, viewer, limit=STEPS_ON_PAGE, now=now),
        "events": [event_context(e) for e in events],
        "earlier_events": earlier,
        "first_event_seq": events[0].seq if events else None,
        # The run row was read first: anything after its event_seq reaches the page over the socket,
        # and fragments already shown are replaced by id, so the read order cannot lose an update.
        "cursor": run.event_seq,
        "ancestors": ancestors,
        "children": children,
        "children_truncated": children_truncated,
        **result_context(run, viewer),
    }


def result_context(run: Run, viewer: Viewer) -> dict[str, Any]:
    """The run's input, output and error (the _result.html fragment)."""
    input_json, input_cut = pretty_json(run.input)
    output_json, output_cut = pretty_json(run.output) if run.output is not None else ("", False)
    return {
        "run": run,
        "input_json": input_json,
        "input_cut": input_cut,
        "output_json": output_json,
        "output_cut": output_cut,
        "error_tail": last_line(run.error),
        "error_full": run.error if viewer.can_see_tracebacks else "",
    }


def step_detail_context(step: Step, viewer: Viewer) -> dict[str, Any]:
    input_json, input_cut = pretty_json(step.input) if step.input is not None else ("", False)
    output_json, output_cut = pretty_json(step.output) if step.output is not None else ("", False)
    return {
        "step": step,
        "input_json": input_json,
        "input_cut": input_cut,
        "output_json": output_json,
        "output_cut": output_cut,
        "error_tail": last_line(step.error),
        "error_full": step.error if viewer.can_see_tracebacks else "",
        "is_waiting": step.status == StepStatus.WAITING,
    }


def format_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
