"""Hand a run to the worker pool. The only place that talks to django-q2's queue.

`dispatch` must be called inside the transaction of the state change that makes the run runnable:
the ORM broker inserts its queue row in that transaction, so the task exists exactly when the state
change committed (a transactional outbox). The task carries the run id and nothing else (T19, T23).
"""

from django.db import transaction
from django_q.tasks import async_task

TASK = "durable.tasks.drive"


def dispatch(run_id: int) -> None:
    if transaction.get_autocommit():
        raise RuntimeError("dispatch() must run inside the transaction of the state change")
    async_task(TASK, run_id, q_options={"task_name": f"run-{run_id}"})
