"""The demo agents, registered at start-up (imported by durable/workflows.py):

- demo.analyst   analyses data chunks one by one with a tool, then aggregates (the crash-and-resume demo)
- demo.support   looks up an order and proposes a refund through a tool marked requires_approval
- demo.triage    hands billing questions off to a specialist sub-agent, demo.billing

With no API key they use scripted models; with OPENAI_API_KEY or ANTHROPIC_API_KEY set (and
DURABLE_DEMO_MODEL=auto, the default) a real model. DURABLE_DEMO_MODEL may also name a model
("openai:gpt-4o", "anthropic:claude-...") or "scripted". `durable demo <name>` runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection

from durable import agents, control, executor
from durable.agents import Agent, register
from durable.context import current_step
from durable.models import TERMINAL, Run, Status, Step, StepStatus
from durable.providers import ModelRequest, agent_settings, scripted
from durable.tools import ToolContext, tool

OPENAI_DEMO_MODEL = "gpt-4o-mini"
ANTHROPIC_DEMO_MODEL = "claude-3-5-haiku-latest"


def demo_model(script: str) -> str:
    """The model of a demo agent: DURABLE_DEMO_MODEL, or with "auto" a real model when a key is set."""
    choice = str(agent_settings().get("DEMO_MODEL") or "auto")
    if choice == "scripted":
        return f"scripted:{script}"
    if choice != "auto":
        return choice
    if agent_settings().get("OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"):
        return f"openai:{os.environ.get('DURABLE_DEMO_OPENAI_MODEL', OPENAI_DEMO_MODEL)}"
    if agent_settings().get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_API_KEY"):
        return f"anthropic:{os.environ.get('DURABLE_DEMO_ANTHROPIC_MODEL', ANTHROPIC_DEMO_MODEL)}"
    return f"scripted:{script}"


def _tool_results(request: ModelRequest, name: str) -> list[Any]:
    """The successful results of one tool so far, parsed (the scripts read the conversation)."""
    results = []
    for message in request.messages:
        if message["role"] == "tool" and message.get("name") == name and not message.get("is_error"):
            try:
                results.append(json.loads(message["content"]))
            except ValueError:
                results.append(message["content"])
    return results


def _first_user_message(request: ModelRequest) -> str:
    return next((m["content"] for m in request.messages if m["role"] == "user"), "")


# -- demo.analyst: the crash-and-resume agent ----------------------------------------------------------


@tool
def analyse_chunk(index: int, context: ToolContext) -> dict[str, Any]:
    """Analyse one chunk of the dataset and return its score.

    Args:
        index: the chunk number, counted from 0
    """
    from durable.workflows import analyse_chunk as analyse

    options = context.input if isinstance(context.input, dict) else {}
    return analyse(index, int(options.get("step_ms", 200)), options.get("effects_file"))


@tool
def aggregate(scores: list[int]) -> dict[str, Any]:
    """Aggregate the chunk scores into the dataset's figures.

    Args:
        scores: the score of every chunk, in chunk order
    """
    return {"chunks": len(scores), "total": sum(scores), "max": max(scores, default=None)}


def analysis_prompt(input: Any) -> str:
    chunks = int(input.get("chunks", 5)) if isinstance(input, dict) else 5
    return (
        f"Analyse the dataset in {chunks} chunks, numbered 0 to {chunks - 1}: call analyse_chunk for one "
        "chunk at a time, in order. Then call aggregate with all the scores, and report the total and "
        "the highest score in one sentence."
    )


def analysis_script(request: ModelRequest) -> dict[str, Any]:
    found = re.search(r"in (\d+) chunks", _first_user_message(request))
    chunks = int(found.group(1)) if found else 5
    done = _tool_results(request, "analyse_chunk")
    if len(done) < chunks:
        return {"tool_calls": [{"name": "analyse_chunk", "arguments": {"index": len(done)}}]}
    totals = _tool_results(request, "aggregate")
    if not totals:
        return {"tool_calls": [{"name": "aggregate", "arguments": {"scores": [r["score"] for r in done]}}]}
    figures = totals[-1]
    return {"text": f"Analysed {figures['chunks']} chunks: total score {figures['total']}, "
                    f"highest {figures['max']}."}


scripted.register("analysis", analysis_script)
analyst = register(Agent(
    "demo.analyst",
    demo_model("analysis"),
    "You are a data analyst. Work through the chunks with your tools exactly as asked; do not guess scores.",
    tools=[analyse_chunk, aggregate],
    max_turns=60,
    prompt=analysis_prompt,
    description="Analyses data chunks one by one with a tool, then aggregates them",
))


# -- demo.support: a refund proposal marked for approval -------------------------------------------------

ORDERS = {
    "A-1001": {"order_id": "A-1001", "customer": "Ana Lima", "item": "espresso machine", "total": 249.0,
               "status": "delivered", "note": "customer reports the machine arrived damaged"},
    "A-1002": {"order_id": "A-1002", "customer": "Ben Ito", "item": "grinder", "total": 89.5,
               "status": "in transit", "note": ""},
}


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its number.

    Args:
        order_id: the order number, like "A-1001"
    """
    if order_id not in ORDERS:
        raise LookupError(f"there is no order {order_id!r}")
    return ORDERS[order_id]


@tool(requires_approval=True)
def propose_refund(order_id: str, amount: float, reason: str) -> dict[str, Any]:
    """Propose a refund for an order. A person approves refunds before any money moves.

    Args:
        order_id: the order number
        amount: the amount to refund, at most the order total
        reason: why the customer should be refunded, in one sentence
    """
    step = current_step()
    key = step.idempotency_key if step else "local"
    return {"refund_id": f"rf-{key}", "order_id": order_id, "amount": amount, "reason": reason,
            "status": "approved and issued"}


def support_script(request: ModelRequest) -> dict[str, Any]:
    found = re.search(r"[A-Z]-\d{4}", _first_user_message(request))
    order_id = found.group(0) if found else "A-1001"
    orders = _tool_results(request, "lookup_order")
    if request.turn == 1:
        return {"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": order_id}}]}
    refunds = _tool_results(request, "propose_refund")
    if orders and not refunds and request.turn == 2:
        order = orders[-1]
        return {"tool_calls": [{"name": "propose_refund", "arguments": {
            "order_id": order["order_id"], "amount": order["total"],
            "reason": "the item arrived damaged"}}]}
    if refunds:
        refund = refunds[-1]
        return {"text": f"I have proposed a refund of {refund['amount']:.2f} for order {refund['order_id']} "
                        f"({refund['refund_id']}); a colleague approves it shortly."}
    return {"text": f"I could not find order {order_id}. Could you check the number?"}


scripted.register("support", support_script)
support = register(Agent(
    "demo.support",
    demo_model("support"),
    "You are a customer support agent. Look up the order the customer names. If it arrived damaged, "
    "propose a refund of the order total with propose_refund (a person approves it). Answer briefly.",
    tools=[lookup_order, propose_refund],
    max_turns=6,
    description="Looks up an order and proposes a refund (marked for approval)",
))


# -- demo.triage hands off to demo.billing ----------------------------------------------------------------

INVOICES = {
    "INV-2041": {"invoice_id": "INV-2041", "customer": "Ana Lima", "amount": 249.0, "status": "paid twice",
                 "paid_on": ["2026-03-02", "2026-03-03"]},
}


@tool
def lookup_invoice(invoice_id: str) -> dict[str, Any]:
    """Look up an invoice and its payments.

    Args:
        invoice_id: the invoice number, like "INV-2041"
    """
    if invoice_id not in INVOICES:
        raise LookupError(f"there is no invoice {invoice_id!r}")
    return INVOICES[invoice_id]


def billing_script(request: ModelRequest) -> dict[str, Any]:
    found = re.search(r"INV-\d+", _first_user_message(request))
    invoices = _tool_results(request, "lookup_invoice")
    if request.turn == 1:
        return {"tool_calls": [{"name": "lookup_invoice",
                                "arguments": {"invoice_id": found.group(0) if found else "INV-2041"}}]}
    if invoices:
        invoice = invoices[-1]
        return {"text": f"Invoice {invoice['invoice_id']} was {invoice['status']} "
                        f"({', '.join(invoice['paid_on'])}); the second payment of {invoice['amount']:.2f} "
                        "will be returned within 5 days."}
    return {"text": "I could not find that invoice; please send its number."}


def triage_script(request: ModelRequest) -> dict[str, Any]:
    answers = [m for m in request.messages if m["role"] == "tool"]
    if not answers:
        return {"tool_calls": [{"name": "transfer_to_demo_billing",
                                "arguments": {"message": _first_user_message(request)}}]}
    return {"text": f"Billing looked into it: {answers[-1]['content']}"}


scripted.register("billing", billing_script)
scripted.register("triage", triage_script)
billing = Agent(
    "demo.billing",
    demo_model("billing"),
    "You are a billing specialist. Look up the invoice the request names and explain what happened "
    "and what will be done, in two sentences.",
    tools=[lookup_invoice],
    max_turns=5,
    description="Billing specialist: invoices, payments, double charges",
)
triage = register(Agent(
    "demo.triage",
    demo_model("triage"),
    "You are the first line of customer support. Hand billing questions (invoices, charges, payments) "
    "to the billing agent, then tell the customer its answer.",
    handoffs=[billing],
    max_turns=4,
    description="Triage: hands billing questions off to the billing specialist",
))

DEMO_MESSAGES = {
    "demo.support": "Hi, my order A-1001 arrived damaged. Can I get my money back?",
    "demo.triage": "I was charged twice for invoice INV-2041, can you help?",
}


# -- `durable demo <name>` ------------------------------------------------------------------------------
# The runners live here, beside the agents they show; the management command only parses arguments.

Write = Callable[[str], None]


def run_inline(name: str, write: Write, message: str | None = None) -> Run:
    """Start a demo agent and drive it (and its handoffs) in this process, then print its transcript."""
    run = agents.start(name, message or DEMO_MESSAGES[name])
    write(f"run {run.pk}: {name} ({agents.get(name).model})")
    run = drive_tree(run.pk)
    print_transcript(run, write)
    return run


def run_analyst(write: Write, *, chunks: int, step_ms: int) -> Run:
    run = control.start("demo.analyst", {"chunks": chunks, "step_ms": step_ms})
    write(f"run {run.pk}: demo.analyst ({analyst.model})")
    run = drive_tree(run.pk)
    print_transcript(run, write)
    return run


def start_demo_runs() -> list[int]:
    """One run of each demo agent (for `durable demo-data`); starting again returns the same runs."""
    runs = [
        control.start("demo.analyst", {"chunks": 8, "step_ms": 300}, idempotency_key="demo-agent-analyst"),
        *(control.start(name, {"message": message}, idempotency_key=f"demo-agent-{name.removeprefix('demo.')}")
          for name, message in DEMO_MESSAGES.items()),
    ]
    return [run.pk for run in runs]


def drive_tree(run_id: int, *, rounds: int = 50) -> Run:
    """Drive a run in this process until it stops, driving the child runs it waits for."""
    for _ in range(rounds):
        run = Run.objects.get(pk=run_id)
        if run.status == Status.QUEUED:
            executor.drive(run_id)
            continue
        children = list(Run.objects.filter(parent_id=run_id).exclude(status__in=TERMINAL))
        if run.status != Status.WAITING or not children:
            return run
        for child in children:
            drive_tree(child.pk, rounds=rounds)
    return Run.objects.get(pk=run_id)


def print_transcript(run: Run, write: Write, indent: str = "") -> None:
    write(f"{indent}run {run.pk} {run.workflow} v{run.workflow_version} [{run.status}]")
    first = run.steps.filter(seq=0, kind="llm").values_list("input", flat=True).first()
    sent = (first or {}).get("args", [{}])[0].get("new_messages", []) if isinstance(first, dict) else []
    message = sent[0]["content"] if sent else None  # the first message, however the agent built it
    if message:
        write(f"{indent}  user: {message}")
    for step in run.steps.order_by("seq"):
        write(f"{indent}  {step.seq:>3} {step.kind:<7} {step.name:<24} {_step_summary(step)}")
        if step.kind == "handoff" and isinstance(step.input, dict) and step.input.get("run_id"):
            child = Run.objects.filter(pk=step.input["run_id"]).first()
            if child is not None:
                print_transcript(child, write, indent + "        ")
    if run.status == Status.SUCCEEDED and isinstance(run.output, dict):
        usage = run.output.get("usage", {})
        write(f"{indent}  answer: {run.output.get('output')}")
        write(f"{indent}  ({run.output.get('turns')} model calls, {usage.get('input_tokens')} tokens in, "
              f"{usage.get('output_tokens')} out, ${run.output.get('cost_usd')})")
    elif run.error:
        write(f"{indent}  error: {run.error.strip().splitlines()[-1]}")


def _step_summary(step: Step) -> str:
    if step.status != StepStatus.COMPLETED:
        error = agents.exception_text(step.error) if step.error else step.status
        return f"[{step.status}] {error}"
    output = step.output
    if step.kind == "llm" and isinstance(output, dict):
        message = output.get("message", {})
        calls = ", ".join(f"{c['name']}({_args(c.get('arguments'))})" for c in message.get("tool_calls") or [])
        said = calls or json.dumps(message.get("content", ""))
        usage = output.get("usage", {})
        return (f"-> {said}   [{usage.get('input_tokens')} in / {usage.get('output_tokens')} out tokens, "
                f"{output.get('latency_ms')} ms, ${output.get('cost_usd')}]")
    if step.kind == "handoff" and isinstance(output, dict):
        return f"-> child run {output.get('run_id')} {output.get('status')}"
    mark = ""
    if isinstance(step.input, dict):
        call = (step.input.get("args") or [{}])[0]
        if isinstance(call, dict) and call.get("approved_by"):
            mark = f"[approved by {call['approved_by']}] "
    return f"{mark}-> {json.dumps(output)[:160]}"


def _args(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return repr(arguments)
    return ", ".join(f"{key}={json.dumps(value)[:60]}" for key, value in arguments.items())


# -- `durable demo crash-resume` --------------------------------------------------------------------------


class DemoWorker:
    """A real `durable worker` process tree in its own session, so that the whole group can be killed."""

    def __init__(self, label: str, log_path: Path):
        self.label = label
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "durable", "worker", "--workers", "1"],
                cwd=settings.BASE_DIR, env=worker_env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pids: set[int] = {self.proc.pid}

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "worker started" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
                raise CommandError(f"worker {self.label} did not start:\n{tail}")
            time.sleep(0.05)
        self.refresh()

    def refresh(self) -> None:
        """Remember every process of the group (django-q2 forks), to say which worker ran a step."""
        for entry in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = entry.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:
                self.pids.add(int(entry.parent.name))

    def did(self, worker_id: str) -> bool:
        return bool(worker_id) and int(worker_id.rsplit(":", 1)[-1]) in self.pids

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_env() -> dict[str, str]:
    """The environment that points a worker process at the database this process uses."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DURABLE_SQLITE_PATH"}}
    if connection.vendor == "sqlite":
        env["DURABLE_SQLITE_PATH"] = str(db["NAME"])
    else:
        user, password = quote(db.get("USER") or "", safe=""), quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        env["DATABASE_URL"] = f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1", DURABLE_LOG_LEVEL="INFO")
    return env


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise CommandError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return value


def crash_resume(write: Write, *, chunks: int = 12, step_ms: int = 300, kill_after: int = 4,
                 timeout: float = 120) -> bool:
    """Start a worker and the analysis agent, SIGKILL the worker's process group mid-run, start another
    worker, and print which steps ran before the crash, which came back from the journal, and how
    often each tool's side effect happened. True when no completed step ran twice."""
    if not 0 < kill_after < chunks:
        raise CommandError("--kill-after must be between 1 and --chunks - 1")
    workdir = Path(settings.BASE_DIR) / "var" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    effects = workdir / f"crash-resume-{stamp}.effects"
    write(f"crash-resume: agent demo.analyst on {analyst.model}, {chunks} chunks of {step_ms} ms; "
          f"effects file {effects}")
    first = DemoWorker("A", workdir / f"crash-resume-{stamp}-worker-A.log")
    second: DemoWorker | None = None
    try:
        first.wait_ready()
        write(f"worker A started (process group {first.proc.pid})")
        run = control.start("demo.analyst", {"chunks": chunks, "step_ms": step_ms, "effects_file": str(effects)})
        write(f"run {run.pk} started")
        tools_done = Step.objects.filter(run_id=run.pk, kind="tool", status=StepStatus.COMPLETED)
        _wait_for(lambda: tools_done.count() >= kill_after, timeout, f"{kill_after} tool steps of run {run.pk}")
        time.sleep(step_ms / 2000)  # land in the middle of the next tool call
        first.kill()
        killed_at = time.time()
        before = {s.seq: s for s in Step.objects.filter(run_id=run.pk)}
        cut = Run.objects.values_list("next_seq", flat=True).get(pk=run.pk)
        write(f"SIGKILL worker A's process group: {len(before)} steps recorded, step {cut} was in flight")
        second = DemoWorker("B", workdir / f"crash-resume-{stamp}-worker-B.log")
        second.wait_ready()
        write(f"worker B started (process group {second.proc.pid}); its sweeper finds A's lease expired")
        run = _wait_for(lambda: Run.objects.filter(pk=run.pk, status__in=TERMINAL).first(), timeout,
                        f"run {run.pk} to finish")
        second.refresh()
        return _report(write, run, before, cut, killed_at, effects, first, second)
    finally:
        if first.proc.poll() is None:
            first.kill()
        if second is not None:
            second.stop()


def _report(write: Write, run: Run, before: dict[int, Step], cut: int, killed_at: float, effects: Path,
            first: DemoWorker, second: DemoWorker) -> bool:
    counts: dict[str, int] = {}
    if effects.exists():
        for line in effects.read_text().splitlines():
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    claimed = run.events.filter(type="run.claimed").order_by("seq").last()
    takeover = f"{claimed.created_at.timestamp() - killed_at:.2f} s after the kill" if claimed else "?"
    write(f"run {run.pk} {run.status}; worker B claimed it {takeover}")
    write("")
    write(f"{'seq':>4}  {'kind':<5} {'name':<22} {'before the kill':<22} {'after the kill':<30} {'effects':>7}")
    ok = True
    for step in run.steps.order_by("seq"):
        who = "A" if first.did(step.worker) else "B" if second.did(step.worker) else step.worker
        old = before.get(step.seq)
        effect = counts.get(f"{run.pk}:{step.seq}", 0) if step.name == "analyse_chunk" else None
        if old is not None and old.status == StepStatus.COMPLETED:
            unchanged = (old.epoch, old.finished_at, old.worker) == (step.epoch, step.finished_at, step.worker)
            then, now = f"ran on worker {who}", "returned from the journal" if unchanged else "RAN AGAIN"
            ok = ok and unchanged and effect in (None, 1)
        elif step.seq == cut:
            then, now = "in flight: cut off", f"ran (again) on worker {who}"
        else:
            then, now = "-", f"ran on worker {who}"
        count = "" if effect is None else effect
        write(f"{step.seq:>4}  {step.kind:<5} {step.name:<22} {then:<22} {now:<30} {count:>7}")
    write("")
    if isinstance(run.output, dict):
        write(f"answer: {run.output.get('output')}")
    elif run.error:
        write(f"error: {run.error.strip().splitlines()[-1]}")
    completed_before = sum(1 for s in before.values() if s.status == StepStatus.COMPLETED)
    write(f"{completed_before} steps completed before the kill came back from the journal; "
          f"{'no completed step ran twice' if ok else 'A COMPLETED STEP RAN TWICE'}.")
    return ok and run.status == Status.SUCCEEDED
