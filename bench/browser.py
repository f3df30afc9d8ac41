"""Run browser benchmark: server time of the list and detail pages and of the JSON API on a seeded
database, and the latency from a step's commit to a live client receiving it.

    cd /work/main && .venv/bin/python bench/browser.py [--db sqlite|postgres|both] [--rounds 3]
        [--runs 100000] [--steps-run 2000] [--samples 40] [--only pages,latency]

Prints one JSON document and writes bench/results/browser-<db>.json per database. Each database is
fresh: a temporary SQLite file (DURABLE_SQLITE_PATH) or the PostgreSQL database
durable_bench_browser (dropped and created), migrated and seeded with `durable seed`.

Pages: each URL is requested through django.test.Client in a child process (as an operator: a
session for the HTML pages, a bearer token for the API), once to warm up, then `--repeat` times per
round; the figure is the median over rounds of each round's median. HTML views that do not exist
(yet) are reported as "missing".

Latency: a daphne server serves the app; a client process holds the server-sent-events stream
/api/runs/<id>/events/stream open; the driving process commits checkpoint-shaped transactions
(fenced UPDATE of the run + INSERT of its event + NOTIFY, and the Redis poke after commit when
REDIS_URL is set) and the client prints when each event arrives. Both read CLOCK_MONOTONIC, which is
one clock for every process of the machine, so latency = received - committed. Variants: plain
SQLite (the server polls every 0.25 s), SQLite + Redis, PostgreSQL (LISTEN/NOTIFY), PostgreSQL + Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import MARKER, ROOT, bench_env, child_json, fresh_database, measure_each_database  # noqa: E402
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

TARGET_PAGE_MS = 200.0
TARGET_LATENCY_P95_MS = {"plain": 1000.0, "wakeup": 150.0}

# The SSE client: a separate process that prints "<seq> <monotonic>" for every event it receives.
SSE_CLIENT = r"""
import socket, sys, time
host, port, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sock = socket.create_connection((host, port))
sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
              f"Authorization: Bearer {token}\r\nConnection: keep-alive\r\n\r\n").encode())
buffer = b""
while True:
    data = sock.recv(65536)
    now = time.monotonic()
    if not data:
        print("closed", flush=True)
        break
    buffer += data
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        line = line.strip()
        if line.startswith(b"retry:"):
            print("ready", flush=True)
        elif line.startswith(b"id: "):
            print(f"{int(line[4:])} {now:.6f}", flush=True)
"""


# ==================================================================================================
# parent: fresh databases, one child process per database
# ==================================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="requests per URL per round")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps-run", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=40, help="events per latency round")
    parser.add_argument("--only", default="", help="comma list of sections (pages,latency); default all")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis latency variants")
    parser.add_argument("--quiet-wait", type=float, default=180.0, metavar="SECONDS",
                        help="before each database, wait up to this long for the CPUs to be mostly idle "
                        "(other processes skew every figure); 0 to skip")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    measure_each_database("browser", args.db, args.quiet_wait, prepare_database,
                          lambda db, env: run_child(db, env, args))


def prepare_database(db: str) -> tuple[dict[str, str], Callable[[], None]]:
    env = bench_env(DEBUG="0")  # no query log: measure what production serves
    env.pop("REDIS_URL", None)
    return env, fresh_database(db, "durable_bench_browser", env)


def run_child(db: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--db", db, "--rounds", str(args.rounds),
        "--repeat", str(args.repeat), "--runs", str(args.runs), "--steps-run", str(args.steps_run),
        "--samples", str(args.samples),
    ]
    if args.only:
        cmd += ["--only", args.only]
    if args.no_redis:
        cmd.append("--no-redis")
    print(f"== {db}: seeding and measuring ({args.rounds} rounds)", file=sys.stderr)
    return child_json(cmd, env, db)


# ==================================================================================================
# child: measurements against the database named by the environment
# ==================================================================================================


def log(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    from durable.seed import seed

    sections = set(filter(None, args.only.split(","))) or {"pages", "latency"}
    out: dict[str, Any] = {
        "db": args.db,
        "vendor": connection.vendor,
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
    }
    log(f"seeding {args.runs:,} runs and one run with {args.steps_run:,} steps")
    result = seed(args.runs, steps_run=args.steps_run, progress=None)
    out["seed"] = {
        "runs": len(result.run_ids), "steps": result.steps, "events": result.events,
        "seconds": round(result.seconds, 1), "big_run_id": result.big_run_id,
    }
    log(f"seeded in {result.seconds:.1f} s")
    analyze()
    if "pages" in sections:
        out["pages"] = measure_pages(args, result.big_run_id or 1)
    if "latency" in sections:
        out["latency"] = measure_latency(args)
    print(MARKER + json.dumps(out, default=str), flush=True)


def analyze() -> None:
    """PostgreSQL: fresh statistics after the bulk load, as autovacuum gives a live database soon
    after. SQLite has no autovacuum and Django never runs ANALYZE there, so it is measured without
    statistics, as a deployment would run."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


# -- pages ---------------------------------------------------------------------------------------


def bench_users() -> tuple[Any, str]:
    from django.contrib.auth.models import Group, User

    from runs.models import ApiToken
    from runs.roles import OPERATORS

    user, _ = User.objects.get_or_create(username="bench.operator")
    user.groups.add(Group.objects.get(name=OPERATORS))
    _, raw = ApiToken.objects.create_token(user, "bench")
    return user, raw


def page_urls(big_run_id: int) -> dict[str, str | None]:
    """name -> URL (None when the view does not exist)."""
    from django.urls import NoReverseMatch, reverse

    from durable.models import Run
    from runs.api import encode_cursor

    def html(name: str, *args: Any, query: str = "") -> str | None:
        try:
            return reverse(name, args=args) + query
        except NoReverseMatch:
            return None

    # A position deep in the list: the 50,000th newest run.
    deep = Run.objects.order_by("-created_at", "-id").values_list("created_at", "id")[50_000:50_001].first()
    deep_cursor = encode_cursor(*deep) if deep else ""
    return {
        "html_list_first_page": html("runs:list"),
        "html_list_filtered": html("runs:list", query="?status=failed&workflow=support.triage"),
        "html_list_search": html("runs:list", query="?q=refund"),
        "html_detail_2000_steps": html("runs:detail", big_run_id),
        "api_list_first_page": "/api/runs",
        "api_list_filtered": "/api/runs?status=failed&workflow=support.triage",
        "api_list_deep_page": f"/api/runs?cursor={deep_cursor}" if deep_cursor else "/api/runs",
        "api_list_200": "/api/runs?limit=200",
        "api_detail_2000_steps": f"/api/runs/{big_run_id}",
        "api_events_1000": f"/api/runs/{big_run_id}/events?after=0&limit=1000",
    }


def measure_pages(args: argparse.Namespace, big_run_id: int) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client

    user, token = bench_users()
    browser = Client()
    browser.force_login(user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    results: dict[str, Any] = {}
    for name, url in page_urls(big_run_id).items():
        if url is None:
            results[name] = {"status": "missing"}
            continue
        client = api if name.startswith("api_") else browser
        first = timed(client, url)
        if first["status"] != 200:
            results[name] = {"url": url, "status": "missing" if first["status"] == 404 else first["status"]}
            continue
        queries = QueryCounter()
        with connection.execute_wrapper(queries):
            timed(client, url)
        round_medians = []
        for _ in range(args.rounds):
            samples = [timed(client, url)["ms"] for _ in range(args.repeat)]
            round_medians.append(round(statistics.median(samples), 2))
        median_ms = round(statistics.median(round_medians), 2)
        results[name] = {
            "url": url,
            "status": 200,
            "median_ms": median_ms,
            "round_medians_ms": round_medians,
            "cold_ms": round(first["ms"], 2),
            "bytes": first["bytes"],
            "queries": len(queries),
            "target": f"< {TARGET_PAGE_MS:.0f} ms",
            "ok": median_ms < TARGET_PAGE_MS,
        }
        log(f"{name}: {median_ms} ms ({len(queries)} queries)")
    return results


class QueryCounter(list[str]):
    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.append(sql)
        return execute(sql, params, many, context)


def timed(client: Any, url: str) -> dict[str, Any]:
    started = time.perf_counter()
    response = client.get(url)
    content = b"".join(response) if response.streaming else response.content
    return {"ms": (time.perf_counter() - started) * 1000, "status": response.status_code, "bytes": len(content)}


# -- latency -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def measure_latency(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    variants = {"plain": False}
    if not args.no_redis and redis_answers():
        variants["redis"] = True
    results: dict[str, Any] = {}
    for with_redis in variants.values():
        label = ("postgresql" if settings.DATABASES["default"]["ENGINE"].endswith("postgresql") else "sqlite")
        label += "+redis" if with_redis else ""
        log(f"latency: {label}")
        results[label] = latency_variant(args, with_redis, label)
    return results


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001  any failure means: no Redis variant
        return False


def latency_variant(args: argparse.Namespace, with_redis: bool, label: str) -> dict[str, Any]:
    """Run this measurement in a grandchild process whose settings have (or lack) REDIS_URL, since
    the channel layer is chosen when settings load."""
    env = os.environ.copy()
    if with_redis:
        env["REDIS_URL"] = REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    code = (
        "import sys; sys.argv[1:] = " + repr([str(args.rounds), str(args.samples)]) + "\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import bench.browser as b; b.latency_driver()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        return {"error": f"latency driver failed (exit {proc.returncode}): {proc.stdout[-2000:]}"}
    result = json.loads(lines[-1][len(MARKER):])
    kind = "plain" if label == "sqlite" else "wakeup"
    target = TARGET_LATENCY_P95_MS[kind]
    result["target"] = f"p95 < {target:.0f} ms"
    result["ok"] = result["p95_ms"] is not None and result["p95_ms"] < target
    return result


def latency_driver() -> None:
    """In its own process: start daphne, an SSE client process, commit events, time them."""
    rounds, samples = int(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from durable import journal
    from durable.models import Event, Run, Status

    _, token = bench_users()
    run = Run.objects.create(
        workflow="bench.live", workflow_version="1", status=Status.RUNNING, input={}, started_at=timezone.now(),
        event_seq=0, lease_epoch=1, claims=1,
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client: subprocess.Popen[str] | None = None
    try:
        wait_port(port)
        client = subprocess.Popen(
            [sys.executable, "-c", SSE_CLIENT, "127.0.0.1", str(port), f"/api/runs/{run.pk}/events/stream", token],
            stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        received: dict[int, float] = {}
        ready = threading.Event()
        arrived = threading.Condition()

        def read() -> None:
            assert client is not None and client.stdout is not None
            for line in client.stdout:
                if line.startswith("ready"):
                    ready.set()
                elif line[:1].isdigit():
                    seq, at = line.split()
                    with arrived:
                        received[int(seq)] = float(at)
                        arrived.notify_all()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("the SSE client never connected")

        def commit_event() -> tuple[int, float]:
            """One checkpoint-shaped transaction: fenced UPDATE + event INSERT + NOTIFY (+ Redis poke
            on commit). Returns the event's seq and the moment its commit returned."""
            with transaction.atomic():
                seq = journal.append_events(run.pk, [("step.completed", {"bench": True})])
            return seq, time.monotonic()

        def wait_received(seq: int, timeout: float = 10.0) -> float | None:
            deadline = time.monotonic() + timeout
            with arrived:
                while seq not in received:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    arrived.wait(remaining)
                return received[seq]

        rng = random.Random(7)
        for _ in range(5):  # warm-up: the server's LISTEN connection, channel layer, caches
            seq, _ = commit_event()
            wait_received(seq)
            time.sleep(0.05)
        per_round = []
        for _ in range(rounds):
            latencies = []
            lost = 0
            for _ in range(samples):
                time.sleep(rng.uniform(0.02, 0.3))  # random phase against any polling period
                seq, committed = commit_event()
                got = wait_received(seq)
                if got is None:
                    lost += 1
                else:
                    latencies.append((got - committed) * 1000)
            latencies.sort()
            per_round.append({
                "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
                "max_ms": round(latencies[-1], 1) if latencies else None,
                "lost": lost,
            })
        p95s = [r["p95_ms"] for r in per_round if r["p95_ms"] is not None]
        p50s = [r["p50_ms"] for r in per_round if r["p50_ms"] is not None]
        out = {
            "p50_ms": statistics.median(p50s) if p50s else None,
            "p95_ms": statistics.median(p95s) if p95s else None,
            "rounds": per_round,
            "samples_per_round": samples,
            "path": "commit in the driving process -> daphne SSE endpoint -> client process",
            "events_in_table": Event.objects.filter(run=run).count(),
        }
        print(MARKER + json.dumps(out), flush=True)
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        connection.close()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = (len(ordered) - 1) * pct / 100
    low, high = int(index), min(int(index) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


if __name__ == "__main__":
    main()
