"""Named exceptions of the engine. Everything a caller can get wrong is a DurableError."""


class DurableError(Exception):
    """Base class for errors a caller of the engine can handle."""


class UnknownWorkflow(DurableError):
    def __init__(self, name: str, known: list[str] | None = None):
        hint = f" (registered: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown workflow {name!r}{hint}")
        self.name = name


class InvalidInput(DurableError):
    """Input that is not valid JSON, or not a JSON object where one is required."""


class PayloadTooLarge(DurableError):
    def __init__(self, what: str, size: int, limit: int):
        super().__init__(f"{what} is {size:,} bytes, over the limit of {limit:,} bytes")
        self.size = size
        self.limit = limit


class NotSerializable(DurableError):
    """A step returned a value that cannot be stored as JSON."""


class RunNotFound(DurableError):
    def __init__(self, run_id: object):
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class InvalidTransition(DurableError):
    """A control (pause, resume, cancel, retry, send-event) that the run's status does not allow."""


class IdempotencyConflict(DurableError):
    """The idempotency key was already used to start a run with another workflow or input."""


class NonDeterminism(DurableError):
    """Replay asked for a different step than the journal holds at that position."""


class StepFailed(DurableError):
    """Raised inside the workflow when a step failed its last attempt."""

    def __init__(self, name: str, seq: int, error: str):
        first_line = error.strip().splitlines()[-1] if error.strip() else "error"
        super().__init__(f"step {seq} {name!r} failed: {first_line}")
        self.step_name = name
        self.seq = seq
        self.error = error


class FencedOut(BaseException):
    """This worker lost its lease: another worker (or a control) raised the epoch. Stop at once.

    A BaseException, like Suspend, so that a workflow's `except Exception` cannot swallow it; it never
    reaches a caller: the driver stops and records nothing.
    """


class Suspend(BaseException):
    """Unwinds the workflow function when the run parks (waits, pauses, yields).

    A BaseException so that a workflow's `except Exception` cannot swallow it.
    """
