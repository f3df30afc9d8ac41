"""Fixtures of the real-process crash tests: a pool of `durable worker` process trees per test (all
killed at teardown), the test database isolated from the fast suite's, and worker logs plus the runs'
journals attached to every failure report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable.models import Event, Run, Step
from tests.chaos.harness import WorkerPool

POOL = pytest.StashKey[WorkerPool]()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """A test database of their own: worker processes write to it for seconds at a time, so a fast
    suite started meanwhile in the same tree (and the same default test database) must not drop it."""
    from django.conf import settings

    for db in settings.DATABASES.values():
        test = db.setdefault("TEST", {})
        if db["ENGINE"].endswith("sqlite3"):
            path = Path(test.get("NAME") or db["NAME"])
            test["NAME"] = str(path.with_name(f"{path.stem}-chaos{path.suffix}"))
        else:
            test["NAME"] = f"{test.get('NAME') or 'test_' + db['NAME']}_chaos"


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, transactional_db: None, tmp_path: Path
) -> Iterator[WorkerPool]:
    """Start workers with `workers.start()`; every process group is SIGKILLed at teardown, before
    the database is flushed."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pool = WorkerPool(log_dir)
    request.node.stash[POOL] = pool
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    """The file step bodies append their idempotency keys to (the external side effect)."""
    return tmp_path / "effects.log"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    pool = item.stash.get(POOL, None)
    if report.failed and pool is not None and report.when == "call":
        report.sections.append(("worker logs", pool.report()))
        report.sections.append(("runs", _describe_runs()))
    return report


def _describe_runs() -> str:
    try:
        lines = []
        for run in Run.objects.order_by("pk"):
            lines.append(
                f"run {run.pk} {run.workflow} [{run.status}] epoch={run.lease_epoch} owner={run.lease_owner!r} "
                f"next_seq={run.next_seq} claims={run.claims} recoveries={run.recoveries} stalls={run.stalls}"
            )
            for step in Step.objects.filter(run=run).order_by("seq"):
                lines.append(
                    f"  step {step.seq} {step.name} [{step.status}] x{step.attempts} epoch={step.epoch} "
                    f"worker={step.worker} {step.started_at:%H:%M:%S.%f}..{step.finished_at or '-'}"
                )
            for event in Event.objects.filter(run=run).order_by("seq"):
                lines.append(
                    f"  event {event.seq} {event.created_at:%H:%M:%S.%f} {event.type} {event.data}"
                )
        return "\n".join(lines)
    except Exception as exc:  # noqa: BLE001  (the report must not hide the test's own failure)
        return f"(could not read the runs: {exc!r})"


TAKEOVERS: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TAKEOVERS:
        return
    terminalreporter.section("takeover after SIGKILL (var/chaos/takeover.json)")
    for sample in TAKEOVERS:
        terminalreporter.write_line(
            f"{sample['db']:<10} {sample['variant']:<5} kill->claim {sample['to_claim_s']:.3f} s  "
            f"kill->next step running {sample['to_step_start_s']:.3f} s  "
            f"kill->next checkpoint {sample['takeover_s']:.3f} s"
        )
