"""django-q2 entry points: one line each, ids only as arguments."""

from durable import executor


def drive(run_id: int) -> str:
    return executor.drive(run_id)
