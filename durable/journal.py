"""The few SQL statements every state change is made of, for SQLite and PostgreSQL.

Each public function here runs inside the caller's `transaction.atomic()`. State changes are
compare-and-set UPDATEs on the run row: the row count (or RETURNING) says whether the change
happened, and the row lock it takes orders concurrent writers of one run (T14). The checkpoint of a
step is three statements in one transaction: fenced UPDATE of the run, INSERT of the step, INSERT of
its event. Raw SQL keeps that path near the cost of the INSERTs themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from durable import live

RUN = "durable_run"
STEP = "durable_step"
EVENT = "durable_event"


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def max_payload() -> int:
    return int(settings.DURABLE["MAX_PAYLOAD_BYTES"])


# One encoder for every call: json.dumps() with options builds a new JSONEncoder each time.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(value: Any) -> str:
    return _encode(value)


def json_param() -> str:
    return "%s::jsonb" if is_postgres() else "%s"


def now_sql(offset_seconds: float = 0.0) -> tuple[str, list[Any]]:
    """The database clock (plus an offset) as an SQL expression and its parameters.

    PostgreSQL: the server's statement timestamp. SQLite has no server: the database lives on this
    machine (never on a network filesystem, T8), so this machine's clock is the database clock.
    """
    if is_postgres():
        return "statement_timestamp() + %s * interval '1 second'", [offset_seconds]
    value = timezone.now() + timedelta(seconds=offset_seconds)
    return "%s", [connection.ops.adapt_datetimefield_value(value)]


def ts_param(value: datetime | None) -> Any:
    if value is None:
        return None
    return connection.ops.adapt_datetimefield_value(value) if not is_postgres() else value


def parse_ts(value: Any) -> datetime | None:
    """A timestamp read back through a raw cursor (SQLite gives text)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.UTC)


def update_run(
    run_id: int,
    *,
    set_sql: str,
    set_params: Sequence[Any] = (),
    where_sql: str,
    where_params: Sequence[Any] = (),
    new_events: int = 0,
    returning: str = "status",
) -> tuple[Any, ...] | None:
    """One compare-and-set on a run. Returns the RETURNING row (event_seq first), or None."""
    now, now_params = now_sql()
    sql = (
        f"UPDATE {RUN} SET {set_sql}, event_seq = event_seq + %s, updated_at = {now} "
        f"WHERE id = %s AND ({where_sql}) RETURNING event_seq, {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*set_params, new_events, *now_params, run_id, *where_params])
        return cursor.fetchone()


def insert_events(run_id: int, last_seq: int, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Insert events numbered up to `last_seq` (the run's event_seq after the UPDATE that took them)."""
    if not events:
        return
    now, now_params = now_sql()
    first = last_seq - len(events) + 1
    row = f"(%s, %s, %s, {json_param()}, {now})"
    params: list[Any] = []
    for offset, (kind, data) in enumerate(events):
        params += [run_id, first + offset, kind, dumps(data), *now_params]
    values = ", ".join([row] * len(events))
    if is_postgres():
        # the NOTIFY rides in the same statement (one round trip); delivered at commit as ever
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {EVENT} (run_id, seq, type, data, created_at) SELECT v.* FROM (VALUES {values}) "
                "AS v (run_id, seq, type, data, created_at), (SELECT pg_notify('durable_events', %s)) AS n",
                [*params, f"{run_id}:{last_seq}"],
            )
        live.poke_on_commit(run_id, last_seq)
        return
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {EVENT} (run_id, seq, type, data, created_at) VALUES {values}", params)
    notify(run_id, last_seq)


def change_run(
    run_id: int,
    *,
    set_sql: str,
    set_params: Sequence[Any] = (),
    where_sql: str,
    where_params: Sequence[Any] = (),
    returning: str = "status",
    event: tuple[str, dict[str, Any]],
) -> tuple[Any, ...] | None:
    """`update_run` plus its one event, atomically: the row (event_seq first) or None (nothing
    changed). On PostgreSQL one statement (data-modifying CTE), committed by itself in autocommit or
    part of the caller's transaction; on SQLite both statements in a transaction of their own."""
    if not is_postgres():
        with transaction.atomic(savepoint=False):
            row = update_run(run_id, set_sql=set_sql, set_params=set_params, where_sql=where_sql,
                             where_params=where_params, new_events=1, returning=returning)
            if row is not None:
                insert_events(run_id, row[0], [event])
        return row
    sql = (
        f"WITH r AS (UPDATE {RUN} SET {set_sql}, event_seq = event_seq + 1, updated_at = statement_timestamp() "
        f"WHERE id = %s AND ({where_sql}) RETURNING event_seq, {returning}, id AS durable_run_id), "
        f"e AS (INSERT INTO {EVENT} (run_id, seq, type, data, created_at) "
        "SELECT durable_run_id, event_seq, %s, %s::jsonb, statement_timestamp() FROM r) "
        "SELECT *, pg_notify('durable_events', durable_run_id || ':' || event_seq) FROM r"
    )
    row = _pg_fetchone(sql, [*set_params, run_id, *where_params, event[0], dumps(event[1])])
    if row is None:
        return None
    live.poke_on_commit(run_id, row[0])
    return tuple(row[:-2])  # without durable_run_id and the NOTIFY


def claim_run(run_id: int, worker: str, lease_seconds: float) -> tuple[Any, ...] | None:
    """Take a queued run: raise the fence, take the lease, record `run.claimed`, atomically.
    Returns (event_seq, epoch, workflow, version, input, db clock or None, parent_id, has_steps) or
    None when the run is not queued. One statement on PostgreSQL."""
    now, now_params = now_sql()
    expires, exp_params = now_sql(lease_seconds)
    pg = is_postgres()
    set_sql = (
        "status = 'running', lease_owner = %s, lease_epoch = lease_epoch + 1, "
        f"lease_expires_at = {expires}, claims = claims + 1, wake_at = NULL, started_at = COALESCE(started_at, {now})"
    )
    # A run no worker ever checkpointed has no journal to load: say so, and save the query.
    returning = (
        f"lease_epoch, workflow, workflow_version, input, {'statement_timestamp()' if pg else 'NULL'}, "
        f"parent_id, EXISTS (SELECT 1 FROM {STEP} WHERE {STEP}.run_id = {RUN}.id)"
    )
    set_params = [worker, *exp_params, *now_params]
    if not pg:
        with transaction.atomic(savepoint=False):
            row = update_run(run_id, set_sql=set_sql, set_params=set_params, where_sql="status = 'queued'",
                             new_events=1, returning=returning)
            if row is not None:
                insert_events(run_id, row[0], [("run.claimed", {"worker": worker, "epoch": row[1]})])
        return row
    sql = (
        f"WITH r AS (UPDATE {RUN} SET {set_sql}, event_seq = event_seq + 1, updated_at = statement_timestamp() "
        f"WHERE id = %s AND status = 'queued' RETURNING event_seq, {returning}, id AS durable_run_id), "
        f"e AS (INSERT INTO {EVENT} (run_id, seq, type, data, created_at) SELECT durable_run_id, event_seq, "
        "'run.claimed', jsonb_build_object('worker', %s::text, 'epoch', lease_epoch), statement_timestamp() FROM r) "
        "SELECT *, pg_notify('durable_events', durable_run_id || ':' || event_seq) FROM r"
    )
    row = _pg_fetchone(sql, [*set_params, run_id, worker])
    if row is None:
        return None
    live.poke_on_commit(run_id, row[0])
    return tuple(row[:-2])


def append_events(run_id: int, events: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """Append events to a run without changing its state; returns the last seq."""
    row = update_run(run_id, set_sql="id = id", where_sql="1 = 1", new_events=len(events))
    if row is None:
        from durable.errors import RunNotFound

        raise RunNotFound(run_id)
    insert_events(run_id, row[0], events)
    return int(row[0])


def notify(run_id: int, seq: int) -> None:
    """Wake live viewers of this run. PostgreSQL delivers the NOTIFY at commit, never before."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify('durable_events', %s)", [f"{run_id}:{seq}"])
    live.poke_on_commit(run_id, seq)


def write_step(
    *,
    exists: bool,
    run_id: int,
    seq: int,
    name: str,
    kind: str,
    status: str,
    input_json: str | None,
    output_json: str | None,
    error: str,
    attempts: int,
    epoch: int,
    worker: str,
    started_at: datetime,
    finished_at: datetime | None,
    wake_at: datetime | None = None,
) -> None:
    jp = json_param()
    values = [
        status, input_json, output_json, error, attempts, epoch, worker,
        ts_param(started_at), ts_param(finished_at), ts_param(wake_at),
    ]
    with connection.cursor() as cursor:
        if exists:
            cursor.execute(
                f"UPDATE {STEP} SET status = %s, input = {jp}, output = {jp}, error = %s, attempts = %s, "
                "epoch = %s, worker = %s, started_at = %s, finished_at = %s, wake_at = %s "
                "WHERE run_id = %s AND seq = %s",
                [*values, run_id, seq],
            )
        else:
            cursor.execute(
                f"INSERT INTO {STEP} (status, input, output, error, attempts, epoch, worker, "
                "started_at, finished_at, wake_at, run_id, seq, name, kind) "
                f"VALUES (%s, {jp}, {jp}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [*values, run_id, seq, name, kind],
            )


def load_journal(run_id: int) -> dict[int, dict[str, Any]]:
    from durable.models import Step

    rows = Step.objects.filter(run_id=run_id).values(
        "seq", "name", "kind", "status", "input", "output", "error", "attempts", "wake_at"
    )
    return {row["seq"]: row for row in rows}


def in_list(values: Iterable[str]) -> tuple[str, list[str]]:
    items = list(values)
    return ", ".join(["%s"] * len(items)), items


def now_value() -> datetime:
    """The database clock as a value, for ORM writes outside the hot path."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


# -- the checkpoint of a step: the hot path ----------------------------------------------------------
#
# PostgreSQL: ONE statement, sent in autocommit (or inside the caller's transaction): data-modifying
# CTEs make the fenced UPDATE of the run, the step row, its event and the NOTIFY one atomic statement,
# so a checkpoint is one round trip and one commit. The step and the event are only written when the
# fenced UPDATE matched (`FROM r`): a fenced-out worker changes nothing. SQLite has no data-modifying
# CTEs but no network either: the same three statements in one BEGIN IMMEDIATE transaction.
#
# The statements go to the DB-API cursor directly (server-side parameter binding on psycopg, prepared
# after a few executions), unless something observes queries (CaptureQueriesContext, an
# execute_wrapper): then through Django's cursor, so tests and tools see them. Same SQL either way.

_checkpoint_sql: dict[tuple[Any, ...], str] = {}


def _checkpoint_statements(vendor: str, fence: str, exists: bool, extend: bool, native: bool) -> str:
    key = (vendor, fence, exists, extend, native)
    sql = _checkpoint_sql.get(key)
    if sql is not None:
        return sql
    pg = vendor == "postgresql"
    now = "statement_timestamp()" if pg else "%s"
    jp = "%s::jsonb" if pg else "%s"
    lease = (", lease_expires_at = statement_timestamp() + %s * interval '1 second'" if pg else
             ", lease_expires_at = %s") if extend else ""
    run = (
        f"UPDATE {RUN} SET next_seq = %s, stalls = 0, event_seq = event_seq + 1, updated_at = {now}{lease} "
        f"WHERE id = %s AND ({fence}) RETURNING " + ("id, event_seq, status" if pg else "event_seq, status")
    )
    step_set = (
        f"status = %s, input = {jp}, output = {jp}, error = %s, attempts = %s, epoch = %s, worker = %s, "
        "started_at = %s, finished_at = %s, wake_at = NULL"
    )
    step_columns = "status, input, output, error, attempts, epoch, worker, started_at, finished_at, wake_at, seq, name, kind, run_id"
    if pg:
        if exists:
            step = f"UPDATE {STEP} SET {step_set} FROM r WHERE {STEP}.run_id = r.id AND {STEP}.seq = %s"
        else:
            step = f"INSERT INTO {STEP} ({step_columns}) SELECT %s, {jp}, {jp}, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, r.id FROM r"
        event = f"INSERT INTO {EVENT} (run_id, seq, type, data, created_at) SELECT r.id, r.event_seq, %s, {jp}, {now} FROM r"
        sql = (
            f"WITH r AS ({run}), s AS ({step}), e AS ({event}) "
            "SELECT event_seq, status, pg_notify('durable_events', id || ':' || event_seq) FROM r"
        )
    else:
        if exists:
            step = f"UPDATE {STEP} SET {step_set} WHERE run_id = %s AND seq = %s"
        else:
            step = f"INSERT INTO {STEP} ({step_columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s)"
        event = f"INSERT INTO {EVENT} (run_id, seq, type, data, created_at) VALUES (%s, %s, %s, %s, %s)"
        sql = "\x00".join([run, step, event])  # three statements, split by the caller
    if native and not pg:
        sql = sql.replace("%s", "?")  # sqlite3's own placeholder (Django's cursor converts it)
    _checkpoint_sql[key] = sql
    return sql


def _hot_cursor(db: Any) -> tuple[Any, bool]:
    """(cursor, native): the DB-API cursor when nothing observes queries, else Django's."""
    if db.execute_wrappers or db.force_debug_cursor:
        return db.cursor(), False
    if not db.health_check_done:
        db.close_if_health_check_failed()  # as Django's cursor() would: a dead connection is replaced
    if db.connection is None:
        db.ensure_connection()
    raw = db.connection
    cursor = getattr(db, "_durable_hot_cursor", None)
    if cursor is None or cursor.connection is not raw:
        if db.vendor == "postgresql":
            import psycopg

            cursor = psycopg.Cursor(raw)  # server-side binding, so that statements can be prepared
            if raw.prepare_threshold is None:
                # Django turns preparation off, which also refuses execute(prepare=True). Only our
                # cursor asks for it: Django's own cursors bind client-side and never prepare.
                raw.prepare_threshold = 1 << 30
        else:
            cursor = raw.cursor()
        db._durable_hot_cursor = cursor
    return cursor, True


def hot_execute(sql: str, params: Sequence[Any], db: Any = None, fetch: str = "one") -> Any:
    """Run one hot-path statement on PostgreSQL; returns its row ("one"), rows ("all") or nothing.
    On the DB-API cursor it is prepared (Django leaves psycopg's automatic preparation off):
    planning a CTE costs more server time than executing it."""
    if db is None:
        db = connections["default"]
    cursor, native = _hot_cursor(db)
    try:
        with db.wrap_database_errors:
            if native:
                cursor.execute(sql, params, prepare=True)
            else:
                cursor.execute(sql, params)
            if fetch == "one":
                return cursor.fetchone()
            return cursor.fetchall() if fetch == "all" else None
    finally:
        if not native:
            cursor.close()


_pg_fetchone = hot_execute


_UTC = timezone.UTC


def _sqlite_ts(db: Any, value: datetime | None) -> Any:
    if value is not None and value.tzinfo is _UTC and db.timezone is _UTC:
        return str(value.replace(tzinfo=None))  # what adapt_datetimefield_value gives, without its checks
    return db.ops.adapt_datetimefield_value(value)


def checkpoint(
    run_id: int,
    *,
    fence: tuple[str, list[Any]],
    next_seq: int,
    lease_seconds: float | None,
    exists: bool,
    seq: int,
    name: str,
    kind: str,
    status: str,
    input_json: str | None,
    output_json: str | None,
    error: str,
    attempts: int,
    epoch: int,
    worker: str,
    started_at: datetime,
    finished_at: datetime,
    event_type: str,
    event_json: str,
) -> tuple[int, str] | None:
    """Record a step and its event, fenced, in one transaction. Returns (event_seq, run status) after
    it, or None when the fence refused it (nothing was written). `lease_seconds`, when given, also
    extends the lease from the database clock."""
    db = connections["default"]
    fence_sql, fence_params = fence
    extend = lease_seconds is not None
    if db.vendor == "postgresql":
        sql = _checkpoint_statements("postgresql", fence_sql, exists, extend, True)
        params: list[Any] = [next_seq]
        if extend:
            params.append(lease_seconds)
        params += [run_id, *fence_params, status, input_json, output_json, error, attempts, epoch, worker,
                   started_at, finished_at, seq]
        if not exists:
            params += [name, kind]
        params += [event_type, event_json]
        row = _pg_fetchone(sql, params, db)
        if row is None:
            return None
        event_seq = row[0]
    else:
        cursor, native = _hot_cursor(db)
        run_sql, step_sql, event_sql = _checkpoint_statements("sqlite", fence_sql, exists, extend, native).split("\x00")
        now = timezone.now()
        now_param = _sqlite_ts(db, now)
        run_params: list[Any] = [next_seq, now_param]
        if extend:
            run_params.append(_sqlite_ts(db, now + timedelta(seconds=lease_seconds)))
        run_params += [run_id, *fence_params]
        step_params = [status, input_json, output_json, error, attempts, epoch, worker,
                       _sqlite_ts(db, started_at), _sqlite_ts(db, finished_at)]
        step_params += [run_id, seq] if exists else [seq, name, kind, run_id]
        try:
            with transaction.atomic(using=db.alias, savepoint=False), db.wrap_database_errors:
                cursor.execute(run_sql, run_params)
                row = cursor.fetchone()
                if row is None:
                    return None
                event_seq = row[0]
                cursor.execute(step_sql, step_params)
                cursor.execute(event_sql, [run_id, event_seq, event_type, event_json, now_param])
        finally:
            if not native:
                cursor.close()
    live.poke_on_commit(run_id, event_seq)
    return event_seq, row[1]
