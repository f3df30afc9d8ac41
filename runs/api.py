"""The JSON API under /api/ (django-ninja): browse runs, tail their events, start and steer them.

Authentication is a per-user bearer token (`Authorization: Bearer dur_...`) or the browser session
(runs/auth.py). Permissions are the UI's: reading needs durable.view_run, every control needs
durable.control_run. Controls call durable.control, the functions the UI, the command line and admin
call, so a refused control (409) or bad input (400, 413, 422) changes nothing stored.
OpenAPI schema: /api/openapi.json; interactive docs: /api/docs (assets served from ninja's static
files, nothing from a CDN).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DataError, connection, models
from django.db.models import F, Func, Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.responses import NinjaJSONEncoder
from pydantic import field_validator

from durable import control, registry
from durable.errors import (
    DurableError,
    IdempotencyConflict,
    InvalidTransition,
    PayloadTooLarge,
    RunNotFound,
)
from durable.models import TERMINAL, Event, Run, Step
from durable.models import Status as RunStatus
from runs import tail
from runs.access import check_runs_permission
from runs.auth import api_auth
from runs.roles import CONTROL_RUNS, VIEW_RUNS

MAX_PAGE = 200
MAX_WAIT_SECONDS = 30.0
MAX_EVENTS = 1000
MAX_ID = 2**63 - 1
MAX_SEQ = 2**31 - 1
# An SSE response ends after this long (the browser's EventSource reconnects with Last-Event-ID),
# so a stream never pins a thread and a database connection for ever.
STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0

DESCRIPTION = """Browse runs, follow their events live, start and steer them.

Authenticate with a personal token from the API tokens page (`Authorization: Bearer dur_...`) or
with the browser session (unsafe methods then need the `X-CSRFToken` header). Reading needs the
operator role (durable.view_run); starting and controlling runs needs the run admin role
(durable.control_run). Errors are `{"detail": ...}`: 401, 403, 404, 409 (a control the run's status
does not allow), 400 (malformed JSON, unknown workflow), 413 (payload too large), 422 (schema). A
refused request changes nothing."""

api = NinjaAPI(
    title="durable",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=api_auth,
)


# -- errors: always {"detail": ...}, never a 500 for something the caller did -------------------


def _error(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    return api.create_response(request, {"detail": detail}, status=status)


ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (RunNotFound, 404),
    (InvalidTransition, 409),
    (IdempotencyConflict, 409),
    (PayloadTooLarge, 413),
    (DurableError, 400),  # UnknownWorkflow, InvalidInput, NotSerializable
]

for _exc, _status in ERROR_STATUS:
    api.add_exception_handler(_exc, lambda request, exc, status=_status: _error(request, status, str(exc)))


@api.exception_handler(DataError)
def _refused_by_database(request: HttpRequest, exc: DataError) -> HttpResponse:
    # A value the schema checks (storable) let through but the database refuses. The control's
    # transaction rolled back, so nothing was stored.
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
    return _error(request, 400, f"the database refused a value: {first_line}")


@api.exception_handler(RequestDataTooBig)
def _request_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(request, 413, "the request body is larger than the server accepts")


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, "authentication required: send 'Authorization: Bearer <token>' or log in")
    response["WWW-Authenticate"] = 'Bearer realm="durable"'
    return response


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, str(exc) or "permission denied")


def _json(request: HttpRequest, data: Any) -> HttpResponse:
    """Render a large read as is. The response schemas still document these endpoints, but
    validating 2,000 steps through them costs more than the query (they are built here to match)."""
    return api.create_response(request, data, status=200)


def _require(request: HttpRequest, perm: str) -> None:
    """The UI's permission check (runs.access), on the user the token or session authenticated."""
    check_runs_permission(request.auth, control=perm == CONTROL_RUNS)  # type: ignore[attr-defined]


def _run_pk(run_id: int) -> int:
    if not 0 < run_id <= MAX_ID:
        raise RunNotFound(run_id)
    return run_id


# -- schemas ----------------------------------------------------------------------------------


class RunOut(Schema):
    id: int
    workflow: str
    version: str
    status: str
    steps: int = Field(description="checkpointed journal entries")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent: int | None
    started_by: str | None = Field(description="username of the user who started it")


class RunPage(Schema):
    items: list[RunOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class StepOut(Schema):
    seq: int
    name: str
    kind: str
    status: str
    attempts: int
    worker: str
    epoch: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    input: Any
    output: Any
    error: str


class Lease(Schema):
    owner: str | None
    epoch: int
    expires_at: datetime | None


class RunDetail(Schema):
    id: int
    workflow: str
    version: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent: int | None
    started_by: str | None
    input: Any
    output: Any
    error: str
    idempotency_key: str | None
    next_seq: int = Field(description="checkpointed journal entries")
    event_seq: int = Field(description="sequence number of the run's last event: tail events after it")
    claims: int
    recoveries: int
    lease: Lease
    steps: list[StepOut] = Field(description="the journal, in order")


class EventOut(Schema):
    seq: int
    type: str
    created_at: datetime
    data: Any


class EventPage(Schema):
    items: list[EventOut]
    last_seq: int = Field(description="the highest seq returned (or `after` when none): pass it as the next ?after=")
    status: str = Field(description="the run's status when the page was read")


def storable(value: Any) -> Any:
    """Refuse text that PostgreSQL cannot store, in any string or key of a JSON value: NUL
    characters (neither text nor jsonb holds them) and lone surrogates (not UTF-8)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("text must not contain NUL (\\u0000) characters")
            try:
                item.encode()
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return value


class StartIn(Schema):
    workflow: str = Field(min_length=1, max_length=200)
    input: Any = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("workflow", "input", "idempotency_key")
    @classmethod
    def check_storable(cls, value: Any) -> Any:
        return storable(value)


class SendEventIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    data: Any = None

    @field_validator("name", "data")
    @classmethod
    def check_storable(cls, value: Any) -> Any:
        return storable(value)


class CancelIn(Schema):
    reason: str = Field(default="", max_length=500)

    @field_validator("reason")
    @classmethod
    def check_storable(cls, value: Any) -> Any:
        return storable(value)


class ControlOut(Schema):
    id: int
    status: str


class WorkflowOut(Schema):
    name: str
    version: str
    description: str
    input_example: Any


class Detail(Schema):
    detail: Any


ERRORS = {401: Detail, 403: Detail, 404: Detail}
CONTROL_ERRORS = {**ERRORS, 400: Detail, 409: Detail, 413: Detail}


# -- reading ----------------------------------------------------------------------------------

RUN_FIELDS = (
    "id", "workflow", "workflow_version", "status", "next_seq", "created_at", "started_at",
    "finished_at", "parent_id", "started_by__username",
)


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workflow": row["workflow"],
        "version": row["workflow_version"],
        "status": row["status"],
        "steps": row["next_seq"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "parent": row["parent_id"],
        "started_by": row["started_by__username"],
    }


def encode_cursor(created_at: datetime, pk: int) -> str:
    raw = f"{created_at.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, pk = raw.rpartition("|")
        when, number = datetime.fromisoformat(created), int(pk)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HttpError(400, "invalid cursor: pass back the next_cursor of a previous page") from None
    if when.tzinfo is None or not 0 < number <= MAX_ID:
        raise HttpError(400, "invalid cursor: pass back the next_cursor of a previous page")
    try:
        return when.astimezone(UTC), number
    except (OverflowError, ValueError):
        raise HttpError(400, "invalid cursor: pass back the next_cursor of a previous page") from None


def _utc(value: datetime, what: str) -> datetime:
    """An aware UTC datetime (naive means UTC), or 422 for one that has no UTC equivalent."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HttpError(422, f"{what} is out of range") from None


@api.get("/runs", response={200: RunPage, 400: Detail, **ERRORS}, tags=["runs"], summary="List runs, newest first")
def list_runs(
    request: HttpRequest,
    status: list[RunStatus] = Query(None, description="one or more statuses"),  # noqa: B008
    workflow: str | None = None,
    started_by: str | None = Query(None, description="username"),
    created_after: datetime | None = Query(None, description="inclusive, ISO 8601 (UTC when no offset)"),  # noqa: B008
    created_before: datetime | None = Query(None, description="exclusive, ISO 8601 (UTC when no offset)"),  # noqa: B008
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=MAX_PAGE),
) -> HttpResponse:
    """Keyset pagination on (created_at, id), both descending: pages stay stable while runs are
    added, and deep pages cost the same as the first (index run_created_desc)."""
    _require(request, VIEW_RUNS)
    for name, text in (("workflow", workflow), ("started_by", started_by)):
        try:
            storable(text)
        except ValueError as exc:
            raise HttpError(422, f"{name}: {exc}") from None
    runs = Run.objects.order_by("-created_at", "-id")
    if started_by:
        user_id = get_user_model().objects.filter(username=started_by).values_list("pk", flat=True).first()
        runs = _list_filter(runs, "started_by_id", "exact", user_id) if user_id else runs.none()
    if status:
        runs = _list_filter(runs, "status", "in", status)
    if workflow:
        runs = _list_filter(runs, "workflow", "exact", workflow)
    if created_after:
        runs = runs.filter(created_at__gte=_utc(created_after, "created_after"))
    if created_before:
        runs = runs.filter(created_at__lt=_utc(created_before, "created_before"))
    if cursor:
        created, pk = decode_cursor(cursor)
        # created_at <= c bounds the index scan; the OR then drops the rows of the cursor's own
        # timestamp that were already on the previous page.
        runs = runs.filter(Q(created_at__lte=created) & (Q(created_at__lt=created) | Q(id__lt=pk)))
    rows = [_run_row(row) for row in runs.values(*RUN_FIELDS)[: limit + 1]]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return _json(request, {"items": rows, "next_cursor": next_cursor})


# SQLite: see _list_filter
UNINDEXED = {"status": models.CharField(), "workflow": models.CharField(), "started_by_id": models.BigIntegerField()}


def _list_filter(runs: QuerySet[Run], column: str, lookup: str, value: Any) -> QuerySet[Run]:
    """Filter the run list on one column.

    SQLite without fresh statistics (it has no autovacuum) filters through the status or workflow
    index and then sorts every match: 250 ms for status=succeeded over 100,000 runs. Behind SQLite's
    unary `+` the column cannot use its index, so the page walks run_created_desc newest first and
    stops at `limit` matches: about 1 ms, at worst one pass over that index (~50 ms per 100,000 runs)
    for a filter that matches nothing. PostgreSQL's planner has statistics: the plain column.
    """
    if connection.vendor == "sqlite":
        alias = f"{column}_noindex"
        runs = runs.alias(**{alias: Func(F(column), template="+%(expressions)s", output_field=UNINDEXED[column])})
        column = alias
    return runs.filter(**{f"{column}__{lookup}": value})


STEP_FIELDS = (
    "seq", "name", "kind", "status", "attempts", "worker", "epoch", "started_at", "finished_at",
    "input", "output", "error",
)


@api.get("/runs/{run_id}", response={200: RunDetail, **ERRORS}, tags=["runs"], summary="A run with its steps")
def get_run(request: HttpRequest, run_id: int) -> HttpResponse:
    _require(request, VIEW_RUNS)
    try:
        run = Run.objects.select_related("started_by").get(pk=_run_pk(run_id))
    except Run.DoesNotExist:
        raise RunNotFound(run_id) from None
    steps = list(Step.objects.filter(run_id=run.pk).order_by("seq").values(*STEP_FIELDS))
    for step in steps:
        started, finished = step["started_at"], step["finished_at"]
        step["duration_ms"] = (finished - started).total_seconds() * 1000 if started and finished else None
    return _json(request, {
        "id": run.pk,
        "workflow": run.workflow,
        "version": run.workflow_version,
        "status": run.status,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "parent": run.parent_id,
        "started_by": run.started_by.get_username() if run.started_by else None,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "idempotency_key": run.idempotency_key,
        "next_seq": run.next_seq,
        "event_seq": run.event_seq,
        "claims": run.claims,
        "recoveries": run.recoveries,
        "lease": {"owner": run.lease_owner or None, "epoch": run.lease_epoch, "expires_at": run.lease_expires_at},
        "steps": steps,
    })


def _events_page(run_id: int, after: int, limit: int) -> dict[str, Any]:
    status = Run.objects.filter(pk=_run_pk(run_id)).values_list("status", flat=True).first()
    if status is None:
        raise RunNotFound(run_id)
    # Index: event_run_seq (run_id, seq).
    items = list(
        Event.objects.filter(run_id=run_id, seq__gt=after).order_by("seq").values("seq", "type", "created_at", "data")[:limit]
    )
    return {"items": items, "last_seq": items[-1]["seq"] if items else after, "status": status}


@api.get("/runs/{run_id}/events", response={200: EventPage, **ERRORS}, tags=["events"],
         summary="Events after a sequence number, with long-poll")
async def run_events(
    request: HttpRequest,
    run_id: int,
    after: int = Query(0, ge=0, le=MAX_SEQ, description="return events with seq > after"),
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a new event when there is none yet"),
    limit: int = Query(100, ge=1, le=MAX_EVENTS),
) -> HttpResponse:
    """Without `wait`, answers at once. With `wait`, answers as soon as an event after `after`
    exists (woken by PostgreSQL NOTIFY or the Redis channel layer, else polling every 0.25 s), or with
    an empty page when `wait` seconds pass."""
    await sync_to_async(_require)(request, VIEW_RUNS)
    page = await sync_to_async(_events_page)(run_id, after, limit)
    waiting = not page["items"] and wait > 0 and page["status"] not in TERMINAL
    if waiting and await tail.wait_for_events(run_id, after, wait):
        page = await sync_to_async(_events_page)(run_id, after, limit)
    return _json(request, page)


def _last_event_id(request: HttpRequest, after: int | None) -> int:
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return after or 0
    try:
        value = int(header)
    except ValueError:
        raise HttpError(400, "Last-Event-ID must be an event sequence number") from None
    if not 0 <= value <= MAX_SEQ:
        raise HttpError(400, "Last-Event-ID must be an event sequence number")
    return value


def _sse(event: dict[str, Any]) -> str:
    # One line of JSON (json.dumps escapes newlines inside strings), as SSE's data field needs.
    data = json.dumps(event, cls=NinjaJSONEncoder, separators=(",", ":"))
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n"


async def _stream(run_id: int, after: int) -> Any:
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + STREAM_SECONDS
    yield "retry: 1000\n\n"
    while True:
        page = await sync_to_async(_events_page)(run_id, after, MAX_EVENTS)
        for event in page["items"]:
            yield _sse(event)
        after = page["last_seq"]
        if len(page["items"]) == MAX_EVENTS:
            continue
        if page["status"] in TERMINAL:
            # Tell the client the run is over, so it closes instead of reconnecting.
            yield f"event: end\ndata: {{\"status\": \"{page['status']}\", \"last_seq\": {after}}}\n\n"
            return
        remaining = ends_at - loop.time()
        if remaining <= 0:
            return
        if not await tail.wait_for_events(run_id, after, min(KEEPALIVE_SECONDS, remaining)):
            yield ": keepalive\n\n"


@api.get("/runs/{run_id}/events/stream", response={200: None, **ERRORS}, tags=["events"],
         summary="Server-sent events: the run's events as they are committed",
         openapi_extra={"responses": {200: {"description": "text/event-stream",
                                            "content": {"text/event-stream": {"schema": {"type": "string"}}}}}})
async def stream_events(
    request: HttpRequest,
    run_id: int,
    after: int | None = Query(None, ge=0, le=MAX_SEQ, description="start after this seq (Last-Event-ID wins)"),
) -> StreamingHttpResponse:
    """Each event is sent as `id: <seq>`, `event: <type>`, `data: <JSON>`. A reconnecting EventSource
    sends Last-Event-ID and gets what it missed. When the run is finished the server sends
    `event: end` and closes; otherwise the stream ends after a few minutes and the client reconnects."""
    await sync_to_async(_require)(request, VIEW_RUNS)
    start = _last_event_id(request, after)
    if not await Run.objects.filter(pk=_run_pk(run_id)).aexists():
        raise RunNotFound(run_id)
    response = StreamingHttpResponse(_stream(run_id, start), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


# -- controls ---------------------------------------------------------------------------------


@api.get("/workflows", response={200: list[WorkflowOut], **ERRORS}, tags=["runs"], summary="Registered workflows")
def list_workflows(request: HttpRequest) -> list[dict[str, Any]]:
    _require(request, VIEW_RUNS)
    return [
        {"name": wf.name, "version": wf.version, "description": wf.description, "input_example": wf.input_example}
        for wf in registry.all_workflows()
    ]


@api.post("/runs", response={200: RunOut, 201: RunOut, **CONTROL_ERRORS}, tags=["controls"], summary="Start a run")
def start_run(request: HttpRequest, payload: StartIn) -> Status[dict[str, Any]]:
    """201 with the new run; with an idempotency key already used for the same workflow and input,
    200 with the run it started (409 when it started another workflow or input)."""
    _require(request, CONTROL_RUNS)
    key = payload.idempotency_key
    existed = key is not None and Run.objects.filter(idempotency_key=key).exists()
    run = control.start(payload.workflow, payload.input, idempotency_key=key, user=request.auth)  # type: ignore[attr-defined]
    row = Run.objects.filter(pk=run.pk).values(*RUN_FIELDS).get()
    return Status(200 if existed else 201, _run_row(row))


def _control(request: HttpRequest, run_id: int, action: str, **kwargs: Any) -> dict[str, Any]:
    _require(request, CONTROL_RUNS)
    status = getattr(control, action)(_run_pk(run_id), user=request.auth, **kwargs)  # type: ignore[attr-defined]
    return {"id": run_id, "status": str(status)}


@api.post("/runs/{run_id}/pause", response={200: ControlOut, **CONTROL_ERRORS}, tags=["controls"],
          summary="Pause at the next step boundary")
def pause_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _control(request, run_id, "pause")


@api.post("/runs/{run_id}/resume", response={200: ControlOut, **CONTROL_ERRORS}, tags=["controls"],
          summary="Resume a paused or dead-lettered run")
def resume_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _control(request, run_id, "resume")


@api.post("/runs/{run_id}/cancel", response={200: ControlOut, **CONTROL_ERRORS}, tags=["controls"],
          summary="Cancel an unfinished run")
def cancel_run(request: HttpRequest, run_id: int, payload: CancelIn | None = None) -> dict[str, Any]:
    return _control(request, run_id, "cancel", reason=payload.reason if payload else "")


@api.post("/runs/{run_id}/retry", response={200: ControlOut, **CONTROL_ERRORS}, tags=["controls"],
          summary="Retry a failed or dead-lettered run from its failed step")
def retry_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _control(request, run_id, "retry")


@api.post("/runs/{run_id}/send-event", response={200: ControlOut, **CONTROL_ERRORS}, tags=["controls"],
          summary="Send an external event to a run (consumed by ctx.wait_event)")
def send_event(request: HttpRequest, run_id: int, payload: SendEventIn) -> dict[str, Any]:
    _require(request, CONTROL_RUNS)
    control.send_event(_run_pk(run_id), payload.name, payload.data, user=request.auth)  # type: ignore[attr-defined]
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).get()
    return {"id": run_id, "status": status}


# -- approvals (approvals/api.py): the same API object, authentication and error format ----------------
from approvals.api import router as approvals_router  # noqa: E402

api.add_router("/approvals", approvals_router)
