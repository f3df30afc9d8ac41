"""Historical runs for load tests and benchmarks: `python manage.py durable seed --runs N --steps-run M`.

Seeded runs are over (succeeded, failed, cancelled) or paused, hold no lease and are never
dispatched: nothing runs them unless a person resumes or retries one. A fixed random seed makes the
data the same on every database.

Speed: a million journal rows through bulk_create spend ~90% of their time in Django's per-value
SQL compilation, so rows are built as tuples of database values and inserted in bulk, one
multi-row INSERT per chunk through the driver's cursor (RETURNING the run ids), one transaction per
batch of runs. Columns the seed does not set get their model default, computed once per column.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from django.db.models.expressions import DatabaseDefault
from django.utils import timezone

from durable.models import Event, Run, Status, Step, StepStatus

SEED_USERS = ("seed.ana", "seed.bruno", "seed.chen", "seed.dara", "seed.emeka", "seed.farah")

# workflow -> its steps as (name, kind); a run records a prefix of them (all of them when it succeeded)
WORKFLOWS: dict[str, list[tuple[str, str]]] = {
    "support.triage": [("classify_ticket", "llm"), ("lookup_customer", "tool"), ("draft_reply", "llm"), ("send_reply", "tool")],
    "research.report": [("plan", "llm"), ("search_web", "tool"), ("read_sources", "tool"), ("summarise", "llm"), ("write_report", "llm")],
    "billing.invoice": [("load_customer", "step"), ("render_pdf", "step"), ("email_invoice", "tool")],
    "agents.coder": [("plan_change", "llm"), ("edit_files", "tool"), ("run_tests", "tool"), ("review", "approval"), ("open_pull_request", "tool")],
    "demo.analysis": [("analyse_chunk", "step")] * 5 + [("aggregate", "step")],
    "etl.nightly": [("extract", "step"), ("transform", "step"), ("load", "step")],
}
WORKFLOW_WEIGHTS = (30, 15, 20, 10, 15, 10)
STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.PAUSED)
STATUS_WEIGHTS = (72, 12, 9, 7)

CUSTOMERS = ("Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Logistics", "Wayne Foods", "Hooli", "Vandelay Imports")
TOPICS = (
    "refund for a duplicate invoice", "password reset loop", "shipping delay to Rotterdam", "API rate limit errors",
    "GDPR data export request", "upgrade to the enterprise plan", "webhook signature mismatch", "missing line items",
    "latency spike in eu-west", "cancel subscription", "SSO login fails with SAML", "quarterly usage report",
)
ERRORS = (
    "TimeoutError: the model provider did not answer within 60 s",
    "ValueError: invoice total does not match line items",
    "PermissionError: the repository token lacks write access",
    "RuntimeError: 3 tests failed in tests/test_api.py",
)
MODELS = ("gpt-4.1-mini", "claude-sonnet-4", "scripted")

RUN_COLUMNS = (
    "workflow", "workflow_version", "status", "input", "output", "error", "started_by", "created_at",
    "started_at", "finished_at", "updated_at", "next_seq", "event_seq", "lease_epoch", "claims",
)
STEP_COLUMNS = ("run", "seq", "name", "kind", "status", "input", "output", "error", "attempts", "epoch", "worker", "started_at", "finished_at")
EVENT_COLUMNS = ("run", "seq", "type", "data", "created_at")


@dataclass
class SeedResult:
    run_ids: list[int] = field(default_factory=list)
    big_run_id: int | None = None
    steps: int = 0
    events: int = 0
    seconds: float = 0.0

    def id_ranges(self) -> str:
        """The created run ids as compact ranges: `1-100000`."""
        ids = sorted(self.run_ids)
        if not ids:
            return "none"
        ranges, start, prev = [], ids[0], ids[0]
        for pk in ids[1:]:
            if pk != prev + 1:
                ranges.append((start, prev))
                start = pk
            prev = pk
        ranges.append((start, prev))
        return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


class Table:
    """Bulk inserts into one model's table: the given fields first, model defaults after.

    SQLite: multi-row INSERTs (RETURNING the ids). PostgreSQL: COPY, with the ids taken from the
    table's sequence first (psycopg parses a statement's placeholders in Python, so a 30,000-parameter
    INSERT costs more than the rows it carries).
    """

    def __init__(self, model: type[models.Model], names: Sequence[str], returning_id: bool = False):
        self.postgres = connection.vendor == "postgresql"
        self.model = model
        self.returning_id = returning_id
        supplied = [model._meta.get_field(name) for name in names]
        rest = [
            f for f in model._meta.concrete_fields
            if not f.primary_key and f not in supplied and not isinstance(f.get_default(), DatabaseDefault)
        ]
        fields = [*supplied, *rest]
        quote = connection.ops.quote_name
        self.table = quote(model._meta.db_table)
        self.columns = ", ".join(quote(f.column) for f in fields)
        if self.postgres:
            # COPY reads text: JSON text for jsonb columns, None for NULL.
            self.constants = tuple(
                None if v is None else (json.dumps(v) if isinstance(f, models.JSONField) else v)
                for f, v in ((f, f.get_default()) for f in rest)
            )
        else:
            self.constants = tuple(f.get_db_prep_save(f.get_default(), connection) for f in rest)
            self.row_sql = "(" + ", ".join(["?"] * len(fields)) + ")"
            self.chunk = max(1, 30000 // len(fields))  # SQLite allows 32,766 parameters per statement

    def insert(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Insert the rows; returns their ids when the table was made with returning_id."""
        cursor = connection.connection.cursor()  # the driver's cursor: no per-value SQL compilation
        try:
            return self._copy(cursor, rows) if self.postgres else self._insert(cursor, rows)
        finally:
            cursor.close()

    def _copy(self, cursor: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        ids: list[int] = []
        columns = self.columns
        if self.returning_id:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [self.model._meta.db_table, len(rows)],
            )
            ids = [row[0] for row in cursor.fetchall()]
            columns = "id, " + columns
        with cursor.copy(f"COPY {self.table} ({columns}) FROM STDIN") as copy:
            if self.returning_id:
                for pk, row in zip(ids, rows, strict=True):
                    copy.write_row((pk, *row, *self.constants))
            else:
                for row in rows:
                    copy.write_row(row + self.constants)
        return ids

    def _insert(self, cursor: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        ids: list[int] = []
        head = f"INSERT INTO {self.table} ({self.columns}) VALUES "
        tail = " RETURNING id" if self.returning_id else ""
        for start in range(0, len(rows), self.chunk):
            chunk = rows[start : start + self.chunk]
            params = list(itertools.chain.from_iterable(row + self.constants for row in chunk))
            cursor.execute(head + ", ".join([self.row_sql] * len(chunk)) + tail, params)
            if tail:
                # Rows come back in VALUES order (bulk_create relies on it too).
                ids += [row[0] for row in cursor.fetchall()]
        return ids


@functools.lru_cache(maxsize=8192)
def _js(text: str) -> str:
    """A JSON string literal. The seed's vocabulary is plain text, so rows are assembled as JSON with
    f-strings: json.dumps per value was a third of the seed's time."""
    return json.dumps(text, ensure_ascii=False)


class _Builder:
    """Rows of runs and their journals as database values: JSON text, and naive UTC datetimes (the
    connection's time zone is UTC on PostgreSQL; Django stores SQLite datetimes as naive UTC text)."""

    def __init__(self, rng: random.Random, user_ids: list[int]):
        self.rng = rng
        self.user_ids: list[int | None] = [*user_ids, None]  # some runs were started by the system
        self.ts: Callable[[datetime], Any] = (lambda value: value) if connection.vendor == "postgresql" else str
        self.workflows = list(WORKFLOWS)
        self.workflow_cum = list(itertools.accumulate(WORKFLOW_WEIGHTS))
        self.status_cum = list(itertools.accumulate(STATUS_WEIGHTS))

    def pick(self, items: Sequence[Any], cum: list[int]) -> Any:
        return items[bisect.bisect_right(cum, self.rng.random() * cum[-1])]

    def run(
        self, created: datetime, *, workflow: str | None = None, plan: list[tuple[str, str]] | None = None,
        status: str | None = None, done: int | None = None, topic: str | None = None,
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """One run row, and its steps and events (their run id left as None). `created` is naive UTC."""
        rng, ts = self.rng, self.ts
        workflow = workflow or self.pick(self.workflows, self.workflow_cum)
        plan = plan or WORKFLOWS[workflow]
        status = str(status or self.pick(STATUSES, self.status_cum))
        if done is None:
            done = len(plan) if status == Status.SUCCEEDED else int(rng.random() * len(plan))
        customer = CUSTOMERS[int(rng.random() * len(CUSTOMERS))]
        topic = topic or TOPICS[int(rng.random() * len(TOPICS))]
        topic_js = _js(topic)
        error = f"Traceback (most recent call last):\n  ...\n{rng.choice(ERRORS)}" if status == Status.FAILED else ""
        started = created + timedelta(milliseconds=5 + int(rng.random() * 400))
        events: list[tuple[Any, ...]] = [
            (None, 1, "run.created", f'{{"workflow": {_js(workflow)}, "version": "1"}}', ts(created)),
            (None, 2, "run.claimed", '{"worker": "seed:0", "epoch": 1}', ts(started)),
        ]
        steps: list[tuple[Any, ...]] = []
        count = done + 1 if status == Status.FAILED else done
        clock = started
        for seq in range(count):
            name, kind = plan[seq % len(plan)]
            failed = status == Status.FAILED and seq == count - 1
            step_start = clock + timedelta(milliseconds=1 + int(rng.random() * 30))
            ms = 20 + int(rng.random() * 4000) if kind == "llm" else 2 + int(rng.random() * 800)
            clock = step_start + timedelta(milliseconds=ms)
            if failed:
                output = None
            elif kind == "llm":
                output = (
                    f'{{"text": {_js(f"Step {seq} on {topic}: draft ready.")}, "model": "{MODELS[seq % 3]}", '
                    f'"tokens": {{"input": {200 + int(rng.random() * 6000)}, "output": {20 + int(rng.random() * 900)}}}}}'
                )
            else:
                output = f'{{"ok": true, "items": {int(rng.random() * 40)}}}'
            step_status = StepStatus.FAILED.value if failed else StepStatus.COMPLETED.value
            attempts = 3 if failed else 1
            steps.append((
                None, seq, name, kind, step_status, f'{{"args": [{topic_js}, {seq}]}}', output,
                error if failed else "", attempts, 1, "seed:0", ts(step_start), ts(clock),
            ))
            data = (f'{{"seq": {seq}, "name": "{name}", "kind": "{kind}", "status": "{step_status}", '
                    f'"attempts": {attempts}, "ms": {ms}}}')
            events.append((None, len(events) + 1, f"step.{step_status}", data, ts(clock)))
        clock += timedelta(milliseconds=1 + int(rng.random() * 50))
        finished: datetime | None = clock
        if status == Status.PAUSED:
            events.append((None, len(events) + 1, "run.pause_requested", f'{{"by": "{SEED_USERS[0]}"}}', ts(clock)))
            events.append((None, len(events) + 1, "run.paused", "{}", ts(clock)))
            finished = None
        else:
            data = f'{{"error": {_js(error.splitlines()[-1])}}}' if error else "{}"
            events.append((None, len(events) + 1, f"run.{status}", data, ts(clock)))
        output_json = (
            f'{{"summary": {_js(f"Resolved {topic} for {customer}")}, "steps": {done}}}'
            if status == Status.SUCCEEDED else None
        )
        priority = ("low", "normal", "normal", "high")[int(rng.random() * 4)]
        input_json = (
            f'{{"customer": {_js(customer)}, "subject": {_js(f"{customer}: {topic}")}, '
            f'"priority": "{priority}", "ticket": "T-{10000 + int(rng.random() * 90000)}"}}'
        )
        run = (
            workflow, "1", status, input_json, output_json, error,
            self.user_ids[int(rng.random() * len(self.user_ids))], ts(created), ts(started),
            ts(finished) if finished else None, ts(clock), count, len(events), 1, 1,
        )
        return run, steps, events


def seed_user_ids() -> list[int]:
    User = get_user_model()
    ids = []
    for username in SEED_USERS:
        user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        ids.append(user.pk)
    return ids


def seed(
    runs: int,
    *,
    steps_run: int = 0,
    batch_size: int = 5000,
    days: int = 90,
    random_seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> SeedResult:
    """Insert `runs` historical runs spread over the last `days` days (ids in created order, and
    about 3% sharing the previous run's created_at, as rows inserted by one statement do), then, when
    `steps_run` > 0, one succeeded run with that many steps."""
    began = time.monotonic()
    rng = random.Random(random_seed)
    builder = _Builder(rng, seed_user_ids())
    tables = (Table(Run, RUN_COLUMNS, returning_id=True), Table(Step, STEP_COLUMNS), Table(Event, EVENT_COLUMNS))
    result = SeedResult()
    # Naive UTC (see _Builder); ten minutes back, so that no seeded step finishes in the future.
    now = timezone.now().astimezone(UTC).replace(tzinfo=None) - timedelta(minutes=10)
    span = days * 86400.0
    offsets = sorted((rng.random() * span for _ in range(runs)), reverse=True)
    previous: datetime | None = None
    for start in range(0, runs, batch_size):
        batch = []
        for offset in offsets[start : start + batch_size]:
            created = now - timedelta(seconds=offset)
            if previous is not None and rng.random() < 0.03:
                created = previous  # ties: keyset pagination must order them by id
            batch.append(builder.run(created))
            previous = created
        _insert(tables, batch, result)
        if progress:
            done = min(start + batch_size, runs)
            rate = done / max(time.monotonic() - began, 1e-9)
            progress(f"seeded {done:,}/{runs:,} runs, {result.steps:,} steps, {result.events:,} events ({rate:,.0f} runs/s)")
    if steps_run > 0:
        big = builder.run(
            now - timedelta(hours=3), workflow="research.deep", status=Status.SUCCEEDED, done=steps_run,
            plan=[("plan", "llm"), ("search_web", "tool"), ("read_sources", "tool"), ("summarise", "llm")],
            topic="market sizing",
        )
        _insert(tables, [big], result)
        result.big_run_id = result.run_ids[-1]
        if progress:
            progress(f"seeded run {result.big_run_id} with {steps_run:,} steps")
    result.seconds = time.monotonic() - began
    return result


def _insert(tables: tuple[Table, Table, Table], batch: list[Any], result: SeedResult) -> None:
    run_table, step_table, event_table = tables
    with transaction.atomic():
        connection.ensure_connection()
        run_ids = run_table.insert([run for run, _, _ in batch])
        steps = [(pk, *row[1:]) for pk, (_, run_steps, _) in zip(run_ids, batch, strict=True) for row in run_steps]
        events = [(pk, *row[1:]) for pk, (_, _, run_events) in zip(run_ids, batch, strict=True) for row in run_events]
        step_table.insert(steps)
        event_table.insert(events)
    result.run_ids += run_ids
    result.steps += len(steps)
    result.events += len(events)
