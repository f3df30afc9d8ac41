"""django-q2's ORM broker with each queue operation one SQL statement (Q_CLUSTER["broker_class"]).

The queue is django-q2's own table and the semantics are the stock ORM broker's (STACK-NOTES Q1):
`enqueue` inserts a row inside the caller's transaction (the transactional outbox: the task exists
exactly when the state change committed), a cluster takes a row by moving its `lock` `retry` seconds
into the future, and the monitor deletes the row once the task is done. What changes is the cost.
The stock broker takes a task with a SELECT and then a compare-and-set UPDATE (two round trips, and
the loser of a race between clusters polls again), deletes through the ORM's delete collector inside
a transaction (three round trips), and calls close_old_connections() on every operation, which with
CONN_HEALTH_CHECKS adds a `SELECT 1` per task to each of the pusher and the monitor. Here:

- take: one `UPDATE ... WHERE id IN (oldest unlocked rows ... FOR UPDATE SKIP LOCKED) RETURNING`,
  so concurrent clusters never pick the same row and the queue is served in order;
- acknowledge: one DELETE;
- the connection is checked every few seconds while tasks flow, and a database error while taking a
  task closes the connection and is retried after a pause instead of killing the pusher.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from django import db
from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

from durable import journal

log = logging.getLogger("durable.broker")

TABLE = "django_q_ormq"
CHECK_EVERY_SECONDS = 5.0


class Broker(ORM):
    _checked = 0.0  # monotonic time of this process's last close_old_connections()

    @staticmethod
    def _connection() -> Any:
        return connections[Conf.ORM]

    def _check_connection(self) -> None:
        """Outside transactions only: drop a broken or expired connection now and then."""
        now = time.monotonic()
        if now - self._checked > CHECK_EVERY_SECONDS:
            db.close_old_connections()
            self._checked = now

    @staticmethod
    def _ts(connection: Any, value: datetime) -> Any:
        return value if connection.vendor == "postgresql" else connection.ops.adapt_datetimefield_value(value)

    @staticmethod
    def _execute(connection: Any, sql: str, params: list[Any], fetch: str) -> Any:
        if connection.vendor == "postgresql":
            return journal.hot_execute(sql, params, connection, fetch)  # prepared
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if fetch == "one":
                return cursor.fetchone()
            return cursor.fetchall() if fetch == "all" else None

    def enqueue(self, task: str) -> int:
        connection = self._connection()
        if connection.get_autocommit():
            self._check_connection()
        row = self._execute(
            connection,
            f"INSERT INTO {TABLE} (key, payload, lock) VALUES (%s, %s, %s) RETURNING id",
            [self.list_key, task, self._ts(connection, timezone.now())],
            "one",
        )
        return int(row[0])

    def dequeue(self) -> list[tuple[int, str]] | None:
        self._check_connection()
        connection = self._connection()
        now = timezone.now()
        skip_locked = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
        try:
            rows = self._execute(
                connection,
                f"UPDATE {TABLE} SET lock = %s WHERE id IN (SELECT id FROM {TABLE} WHERE key = %s "
                f"AND lock < %s ORDER BY id LIMIT {int(Conf.BULK)}{skip_locked}) RETURNING id, payload",
                [self._ts(connection, self.timeout(None)), self.list_key, self._ts(connection, now)],
                "all",
            )
        except db.Error:
            log.warning("taking a task from the queue failed; retrying", exc_info=True)
            connection.close()
            self._checked = 0.0
            time.sleep(max(Conf.POLL, 1.0))
            return None
        if rows:
            return [(int(task_id), payload) for task_id, payload in rows]
        time.sleep(Conf.POLL)  # empty queue: spare the CPU, as the stock broker does
        return None

    def delete(self, task_id: int) -> None:
        connection = self._connection()
        if connection.get_autocommit():
            self._check_connection()
        self._execute(connection, f"DELETE FROM {TABLE} WHERE id = %s", [task_id], "none")
