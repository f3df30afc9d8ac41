"""The worker process: a django-q2 cluster (the process pool) plus the sweeper loop (recovery)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django import db
from django.db import close_old_connections

from durable.executor import conf
from durable.recovery import sweep

log = logging.getLogger("durable.worker")


def sweep_forever(stop: threading.Event) -> None:
    """Sweep every SWEEP_SECONDS until `stop` is set. A failed sweep is logged, never fatal."""
    while not stop.is_set():
        try:
            result = sweep()
            if result:
                log.info("sweep: %s", result)
        except Exception:
            log.exception("sweep failed")
            close_old_connections()
        stop.wait(conf("SWEEP_SECONDS"))


def end_frozen_transactions() -> None:
    """PostgreSQL ends a worker session that sits idle inside a transaction (a process frozen by
    SIGSTOP, a VM pause) so its row locks do not block the run's takeover. Worker transactions are
    milliseconds long: they never wait on a model or a tool (trap 24)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if "postgresql" not in database["ENGINE"]:
        return
    seconds = float(settings.DURABLE.get("IDLE_IN_TRANSACTION_SECONDS", 10))
    options = database.setdefault("OPTIONS", {})
    flag = f"-c idle_in_transaction_session_timeout={int(seconds * 1000)}"
    options["options"] = f"{options.get('options', '')} {flag}".strip()


def run_worker(*, workers: int | None = None, sweeper: bool = True) -> None:
    from django_q.brokers import get_broker
    from django_q.cluster import Cluster
    from django_q.conf import Conf

    if workers:
        Conf.WORKERS = workers
    end_frozen_transactions()
    # Connections must not cross the fork into the cluster's processes (T9).
    db.connections.close_all()
    cluster = Cluster(get_broker())
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start()
    log.info("worker started: %s django-q2 workers, sweeper %s", Conf.WORKERS, "on" if sweeper else "off")
    try:
        if sweeper:
            sweep_forever(stop)
        else:
            stop.wait()
    finally:
        log.info("worker stopping")
        cluster.stop()
