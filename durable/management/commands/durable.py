"""`python manage.py durable SUBCOMMAND`: run workers, start and control runs from any machine."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable import control, registry
from durable.errors import DurableError
from durable.models import Run, Status
from durable.payloads import parse_json
from durable.serializers import run_detail, run_summary

CONTROLS = ("pause", "resume", "cancel", "retry")


class Command(BaseCommand):
    help = "Durable engine: workers, runs and controls. `durable SUBCOMMAND --help` for each."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=argparse.ArgumentParser)

        worker = sub.add_parser("worker", help="run a django-q2 cluster plus the sweeper")
        worker.add_argument("--workers", type=int, help="worker processes (default DURABLE_WORKERS or 2)")
        worker.add_argument("--no-sweeper", action="store_true", help="do not run the recovery sweeper")

        serve = sub.add_parser("serve", help="web server, worker and sweeper together")
        serve.add_argument("--host", default="127.0.0.1")
        serve.add_argument("--port", type=int, default=8000)
        serve.add_argument("--workers", type=int)

        start = sub.add_parser("start", help="start a run; prints its id")
        start.add_argument("workflow")
        start.add_argument("--input", default="{}", help="the run input as JSON")
        start.add_argument("--idempotency-key")
        start.add_argument("--message", help="for an agent: the user's message (the input becomes {\"message\": ...})")

        runs = sub.add_parser("runs", help="list runs, newest first")
        runs.add_argument("--status", choices=[s.value for s in Status])
        runs.add_argument("--workflow")
        runs.add_argument("--limit", type=int, default=50)
        runs.add_argument("--json", action="store_true")

        show = sub.add_parser("show", help="a run with its steps and events")
        show.add_argument("run_id")
        show.add_argument("--json", action="store_true")

        for name in CONTROLS:
            ctl = sub.add_parser(name, help=f"{name} a run")
            ctl.add_argument("run_id")

        send = sub.add_parser("send-event", help="send an event to a run waiting in ctx.wait_event")
        send.add_argument("run_id")
        send.add_argument("name")
        send.add_argument("--data", default="null", help="the event data as JSON")

        from approvals import cli as approvals_cli

        approvals_cli.add_parsers(sub)
        sub.add_parser("workflows", help="list registered workflows")
        sub.add_parser("agents", help="list registered agents: model, version, tools")
        demo = sub.add_parser("demo", help="run a demo: crash-resume (kills a real worker), analyst, support, triage")
        demo.add_argument("name", choices=["crash-resume", "analyst", "support", "triage"])
        demo.add_argument("--message", help="support, triage: the customer's message")
        demo.add_argument("--chunks", type=int, default=12, help="crash-resume, analyst: data chunks")
        demo.add_argument("--step-ms", type=int, default=300, help="crash-resume, analyst: ms per chunk")
        demo.add_argument("--kill-after", type=int, default=4, help="crash-resume: kill after this many tool steps")
        sub.add_parser("demo-data", help="create the demo users (one per role) and demo runs")
        sub.add_parser("sweep", help="run one recovery sweep and print what it did")

        seed = sub.add_parser("seed", help="bulk-insert historical runs (never dispatched) for load tests")
        seed.add_argument("--runs", type=int, default=1000, help="how many runs (default 1000)")
        seed.add_argument("--steps-run", type=int, default=0, help="also one run with this many steps")
        seed.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        from approvals import cli as approvals_cli

        try:
            if subcommand in approvals_cli.HANDLERS:
                approvals_cli.HANDLERS[subcommand](self.stdout, options)
                return
            handler: Callable[[dict[str, Any]], None] = getattr(self, "do_" + subcommand.replace("-", "_"))
            handler(options)
        except DurableError as exc:
            raise CommandError(str(exc)) from None

    # -- processes ------------------------------------------------------------------------------
    def do_worker(self, options: dict[str, Any]) -> None:
        from durable.worker import run_worker

        run_worker(workers=options["workers"], sweeper=not options["no_sweeper"])

    def do_serve(self, options: dict[str, Any]) -> None:
        """Daphne and a worker as child processes; Ctrl-C stops both."""
        python = sys.executable
        manage = os.path.join(settings.BASE_DIR, "manage.py")
        worker_cmd = [python, manage, "durable", "worker"]
        if options["workers"]:
            worker_cmd += ["--workers", str(options["workers"])]
        web_cmd = [
            python, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]),
            "--websocket_timeout", "-1", "config.asgi:application",
        ]
        env = os.environ.copy()
        # links in approval emails point at this server unless DURABLE_BASE_URL says otherwise
        env.setdefault("DURABLE_BASE_URL", f"http://{options['host']}:{options['port']}")
        children = [subprocess.Popen(worker_cmd, env=env), subprocess.Popen(web_cmd, cwd=settings.BASE_DIR, env=env)]
        self.stdout.write(f"durable is serving on http://{options['host']}:{options['port']}/ (Ctrl-C stops)")

        def stop(signum: int, frame: Any) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                try:
                    children[0].wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            stop(signal.SIGTERM, None)
            for child in children:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()

    def do_sweep(self, options: dict[str, Any]) -> None:
        from durable.recovery import sweep

        self.stdout.write(str(sweep()))

    def do_seed(self, options: dict[str, Any]) -> None:
        from durable.seed import seed

        if options["runs"] < 0 or options["steps_run"] < 0 or options["batch_size"] < 1:
            raise CommandError("--runs and --steps-run must be >= 0 and --batch-size >= 1")
        result = seed(options["runs"], steps_run=options["steps_run"], batch_size=options["batch_size"],
                      progress=self.stdout.write)
        self.stdout.write(f"created {len(result.run_ids):,} runs ({result.steps:,} steps, {result.events:,} events) "
                          f"in {result.seconds:.1f} s; run ids: {result.id_ranges()}")
        if result.big_run_id is not None:
            self.stdout.write(f"run with {options['steps_run']:,} steps: {result.big_run_id}")

    # -- runs -----------------------------------------------------------------------------------
    def do_workflows(self, options: dict[str, Any]) -> None:
        for wf in registry.all_workflows():
            self.stdout.write(f"{wf.name}  v{wf.version}  {wf.description}")

    def do_demo_data(self, options: dict[str, Any]) -> None:
        from durable.demo import DEMO_PASSWORD, DEMO_USERS, create_demo_runs, create_demo_users

        create_demo_users()
        started = create_demo_runs()
        self.stdout.write(f"Demo logins (password for each: {DEMO_PASSWORD}):")
        for username, (groups, is_staff, _) in DEMO_USERS.items():
            role = ", ".join(groups) + (" + Django admin" if is_staff else "")
            self.stdout.write(f"  {username:<10} {role}")
        if started:
            self.stdout.write(f"Demo runs started: {', '.join(map(str, started))}")

    def do_agents(self, options: dict[str, Any]) -> None:
        from durable.agents import all_agents

        for agent in all_agents():
            tools = ", ".join(t["name"] for t in agent.model_tools) or "-"
            self.stdout.write(f"{agent.name}  v{agent.version}  {agent.model}  tools: {tools}")

    def do_demo(self, options: dict[str, Any]) -> None:
        from durable import demo_agents

        name = options["name"]
        if name == "crash-resume":
            ok = demo_agents.crash_resume(
                self.stdout.write, chunks=options["chunks"], step_ms=options["step_ms"],
                kill_after=options["kill_after"],
            )
            if not ok:
                raise CommandError("the crash-resume demo found a problem (see above)")
            return
        if name == "analyst":
            run = demo_agents.run_analyst(self.stdout.write, chunks=options["chunks"], step_ms=options["step_ms"])
        else:
            run = demo_agents.run_inline(f"demo.{name}", self.stdout.write, options["message"])
        if run.status == Status.WAITING_APPROVAL:
            from approvals.models import Approval

            for approval in Approval.objects.filter(run=run, status="pending"):
                self.stdout.write(
                    f"run {run.pk} waits for approval {approval.pk} ({approval.tool}): decide it in the inbox "
                    f"at /approvals/{approval.pk}/ or with `durable approve {approval.pk} --user reviewer`"
                )
            return
        if run.status != Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}")

    def do_start(self, options: dict[str, Any]) -> None:
        value = parse_json(options["input"], "--input")
        if options["message"] is not None:
            value = {**(value if isinstance(value, dict) else {}), "message": options["message"]}
        run = control.start(options["workflow"], value, idempotency_key=options["idempotency_key"])
        self.stdout.write(str(run.pk))

    def do_runs(self, options: dict[str, Any]) -> None:
        runs = Run.objects.order_by("-created_at", "-id")
        if options["status"]:
            runs = runs.filter(status=options["status"])
        if options["workflow"]:
            runs = runs.filter(workflow=options["workflow"])
        rows = [run_summary(r) for r in runs[: max(1, options["limit"])]]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self.stdout.write(f"{'ID':>8}  {'STATUS':<10} {'STEPS':>5}  {'CREATED':<25} WORKFLOW")
        for r in rows:
            self.stdout.write(f"{r['id']:>8}  {r['status']:<10} {r['steps']:>5}  {r['created_at']:<25} {r['workflow']}")

    def do_show(self, options: dict[str, Any]) -> None:
        detail = run_detail(control.get_run(options["run_id"]))
        if options["json"]:
            self.stdout.write(json.dumps(detail, indent=2))
            return
        w = self.stdout.write
        w(f"run {detail['id']}  {detail['workflow']} v{detail['version']}  [{detail['status']}]")
        w(f"  input:    {json.dumps(detail['input'])}")
        if detail["output"] is not None:
            w(f"  output:   {json.dumps(detail['output'])}")
        if detail["error"]:
            w(f"  error:    {detail['error'].strip().splitlines()[-1]}")
        w(f"  started:  {detail['started_at']}   finished: {detail['finished_at']}")
        w(f"  claims: {detail['claims']}  recoveries: {detail['recoveries']}  lease: {detail['lease']['owner'] or '-'}")
        w("  steps:")
        for s in detail["steps"]:
            w(f"    {s['seq']:>4} {s['kind']:<6} {s['name']:<24} {s['status']:<10} x{s['attempts']}  {s['worker']}")
        w("  events:")
        for e in detail["events"]:
            w(f"    {e['seq']:>4} {e['created_at']}  {e['type']:<20} {json.dumps(e['data'])}")

    def _control(self, action: str, options: dict[str, Any]) -> None:
        status = getattr(control, action)(options["run_id"])
        self.stdout.write(f"run {options['run_id']}: {status}")

    def do_pause(self, options: dict[str, Any]) -> None:
        self._control("pause", options)

    def do_resume(self, options: dict[str, Any]) -> None:
        self._control("resume", options)

    def do_cancel(self, options: dict[str, Any]) -> None:
        self._control("cancel", options)

    def do_retry(self, options: dict[str, Any]) -> None:
        self._control("retry", options)

    def do_send_event(self, options: dict[str, Any]) -> None:
        data = parse_json(options["data"], "--data")
        control.send_event(options["run_id"], options["name"], data)
        self.stdout.write(f"run {options['run_id']}: event {options['name']!r} sent")
