"""durable: durable execution of workflows and AI agents for Django.

Import the SDK from here: `from durable import workflow, RetryPolicy, current_step`.
"""

from typing import Any

__all__ = ["workflow", "RetryPolicy", "current_step", "NO_RETRY"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing `durable` (settings, apps) does not import models before Django is ready.
    if name == "workflow":
        from durable.registry import workflow

        return workflow
    if name in {"RetryPolicy", "current_step", "NO_RETRY"}:
        from durable import context

        return getattr(context, name)
    raise AttributeError(name)
