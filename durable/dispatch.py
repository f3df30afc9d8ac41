"""Hand a run to the worker pool. The only place that talks to django-q2's queue.

`dispatch` must be called inside the transaction of the state change that makes the run runnable:
the ORM broker inserts its queue row in that transaction, so the task exists exactly when the state
change committed (a transactional outbox). The task carries the run id and nothing else (T19, T23).
"""

from typing import Any

from django.db import transaction
from django_q.brokers import get_broker
from django_q.tasks import async_task

TASK = "durable.tasks.drive"
_task: Any = None  # the function itself: a worker then imports nothing per task (no pydoc.locate)
_broker: Any = None  # one broker object per process instead of one per task


def dispatch(run_id: int) -> None:
    global _task, _broker
    if transaction.get_autocommit():
        raise RuntimeError("dispatch() must run inside the transaction of the state change")
    if _broker is None:
        from durable import tasks

        _task, _broker = tasks.drive, get_broker()
    async_task(_task, run_id, q_options={"task_name": f"run-{run_id}", "broker": _broker})
