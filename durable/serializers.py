"""Plain-dict views of runs, steps and events, shared by the command line and the JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from durable.models import Event, Run, Step


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "workflow": run.workflow,
        "version": run.workflow_version,
        "status": run.status,
        "steps": run.next_seq,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "parent": run.parent_id,
    }


def step_dict(step: Step) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "attempts": step.attempts,
        "worker": step.worker,
        "epoch": step.epoch,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "input": step.input,
        "output": step.output,
        "error": step.error,
    }


def event_dict(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "type": event.type, "created_at": iso(event.created_at), "data": event.data}


def run_detail(run: Run) -> dict[str, Any]:
    return {
        **run_summary(run),
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "idempotency_key": run.idempotency_key,
        "lease": {
            "owner": run.lease_owner or None,
            "epoch": run.lease_epoch,
            "expires_at": iso(run.lease_expires_at),
        },
        "claims": run.claims,
        "recoveries": run.recoveries,
        "steps": [step_dict(s) for s in run.steps.order_by("seq")],
        "events": [event_dict(e) for e in run.events.order_by("seq")],
    }
