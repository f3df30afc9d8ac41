"""Workflows registered by name and version, discovered from `workflows` modules of installed apps."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import autodiscover_modules

from durable.errors import UnknownWorkflow

WorkflowFn = Callable[..., Any]


@dataclass(frozen=True)
class Workflow:
    name: str
    version: str
    fn: WorkflowFn
    description: str = ""
    input_example: Any = None

    def __call__(self, ctx: Any, input: Any) -> Any:
        return self.fn(ctx, input)


_workflows: dict[str, Workflow] = {}


def workflow(
    name: str | None = None, *, version: str = "1", input_example: Any = None
) -> Callable[[WorkflowFn], WorkflowFn]:
    """Register `fn(ctx, input)` as a workflow. Re-registering a name replaces it."""

    def register(fn: WorkflowFn) -> WorkflowFn:
        wf_name = name or f"{fn.__module__}.{fn.__qualname__}"
        doc = (fn.__doc__ or "").strip().splitlines()
        _workflows[wf_name] = Workflow(wf_name, str(version), fn, doc[0] if doc else "", input_example)
        return fn

    return register


def register(definition: Workflow) -> Workflow:
    """Register an already built definition (agents compile themselves into one)."""
    _workflows[definition.name] = definition
    return definition


def get(name: str) -> Workflow:
    try:
        return _workflows[name]
    except KeyError:
        raise UnknownWorkflow(name, list(_workflows)) from None


def all_workflows() -> list[Workflow]:
    return sorted(_workflows.values(), key=lambda w: w.name)


def unregister(name: str) -> None:
    _workflows.pop(name, None)


def autodiscover() -> None:
    autodiscover_modules("workflows")
    autodiscover_modules("agents")
