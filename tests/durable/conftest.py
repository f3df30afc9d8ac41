"""Fixtures of the fast engine tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.db import connection

from tests.durable.support import ENGINE_APPS


@pytest.fixture
def calls() -> Counter[str]:
    """How often each step body ran: the proof that a completed step is not run again."""
    return Counter()


@pytest.fixture
def durable_settings(settings: Any) -> Any:
    """`durable_settings(SLICE_SECONDS=0)`: change engine settings for one test.

    settings.DURABLE is one dict: it is replaced whole, so the change is undone after the test.
    """

    def change(**values: Any) -> None:
        settings.DURABLE = {**settings.DURABLE, **values}

    return change


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The engine's heartbeat thread keeps its own persistent connection, which PostgreSQL counts as
    a user of the test database and so refuses to drop it. End such sessions before the teardown."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session", autouse=True)
def _flush_engine_tables_with_delete() -> Iterator[None]:
    """PostgreSQL: Django empties the tables after each transactional test with TRUNCATE, which
    costs about 0.4 s here (new files, fsync at commit) where DELETE of the few rows a test wrote
    costs 1 ms. Only the flush of the engine's own tables (available_apps=ENGINE_APPS) is changed;
    their foreign keys are deferred, so the order of the DELETEs does not matter. A row another app
    keeps pointing at a run makes the flush fail loudly rather than vanish in a CASCADE."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    engine_tables = {
        model._meta.db_table
        for label in ENGINE_APPS
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    }
    truncate = DatabaseOperations.sql_flush

    def sql_flush(
        self: Any,
        style: Any,
        tables: Any,
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> Any:
        if reset_sequences or not tables or not set(tables) <= engine_tables:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        return [f"DELETE FROM {self.quote_name(table)};" for table in sorted(tables)]

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.sql_flush = truncate  # type: ignore[method-assign]
