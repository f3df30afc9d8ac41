"""FI-20: eight processes (forked, each with its own database connection) claim the same queued run at the same instant; exactly one wins."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from durable import control
from durable.models import Event, Run, Status
from tests.chaos.harness import BASE_DIR, database_env, pid_of, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

RACERS = 8
ROUNDS = 5

# One process sets Django up (slow: about a second of CPU), then forks the racers: separate processes
# with connections of their own. Each racer connects, says it is ready, then for each round waits
# for the go file, sleeps until the instant written in it, and calls claim(); it writes its verdict to a file.
RACERS_SCRIPT = """
import json, os, sys, time, traceback
import django
django.setup()
from django.db import connection, connections
from durable.executor import claim

barrier, racers, run_ids = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]

def race():
    connection.ensure_connection()
    open(f"{barrier}/ready.{os.getpid()}", "w").close()
    for round_no, run_id in enumerate(run_ids):
        go = f"{barrier}/go.{round_no}"
        while not os.path.exists(go):
            time.sleep(0.002)
        at = float(open(go).read())
        while time.time() < at:
            time.sleep(max(0.0, min(0.001, at - time.time())))
        began = time.time()
        lease = claim(run_id)
        ended = time.time()
        verdict = {"round": round_no, "worker": lease.worker if lease else None, "began": began, "ended": ended}
        # one file per verdict, written before the done mark: forked writers never share a pipe
        with open(f"{barrier}/verdict.{round_no}.{os.getpid()}", "w") as out:
            json.dump(verdict, out)
        open(f"{barrier}/done.{round_no}.{os.getpid()}", "w").close()

connections.close_all()  # no connection may cross the fork
children = []
for _ in range(racers):
    pid = os.fork()
    if pid == 0:
        try:
            race()
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    children.append(pid)
sys.exit(1 if any(os.waitpid(pid, 0)[1] for pid in children) else 0)
"""


def test_it_lets_exactly_one_of_eight_processes_claim_a_run(tmp_path: Path) -> None:
    runs = [control.start("demo.analysis", {"chunks": 1, "step_ms": 1}) for _ in range(ROUNDS)]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    racers = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RACERS_SCRIPT,
            str(barrier),
            str(RACERS),
            *[str(run.pk) for run in runs],
        ],
        cwd=BASE_DIR,
        env=database_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: len(list(barrier.glob("ready.*"))) == RACERS or racers.poll() is not None,
            60,
            "the racers to connect",
        )
        for round_no in range(ROUNDS):
            # every racer sees the go file well before the instant written in it, then all claim at once
            (barrier / "go.tmp").write_text(str(time.time() + 0.2))
            (barrier / "go.tmp").rename(barrier / f"go.{round_no}")
            wait_until(
                lambda n=round_no: (
                    len(list(barrier.glob(f"done.{n}.*"))) == RACERS or racers.poll() is not None
                ),
                30,
                f"round {round_no} to end",
            )
        _, err = racers.communicate(timeout=30)
    finally:
        if racers.poll() is None:
            racers.kill()
            racers.wait()
    assert racers.returncode == 0, err
    racer_pids = {int(path.name.split(".")[1]) for path in barrier.glob("ready.*")}
    assert len(racer_pids) == RACERS
    verdicts = [json.loads(path.read_text()) for path in barrier.glob("verdict.*")]
    assert len(verdicts) == RACERS * ROUNDS

    overlaps: list[int] = []
    for round_no, run in enumerate(runs):
        verdicts_of_round = [v for v in verdicts if v["round"] == round_no]
        winners = [v["worker"] for v in verdicts_of_round if v["worker"]]
        assert len(winners) == 1, f"round {round_no}: {len(winners)} claims won: {winners}"
        won = next(v for v in verdicts_of_round if v["worker"])
        overlapping = [
            v for v in verdicts_of_round if not v["worker"] and v["began"] < won["ended"]
        ]
        overlaps.append(len(overlapping))
        print(
            f"round {round_no}: {len(overlapping)} losers overlapped the winner's claim; spread of starts "
            f"{max(v['began'] for v in verdicts_of_round) - min(v['began'] for v in verdicts_of_round):.4f} s"
        )
        run = Run.objects.get(pk=run.pk)
        assert (run.status, run.lease_owner, run.lease_epoch, run.claims) == (
            Status.RUNNING,
            winners[0],
            1,
            1,
        )
        claimed = list(
            Event.objects.filter(run=run, type="run.claimed").values_list("data", flat=True)
        )
        assert claimed == [{"worker": winners[0], "epoch": 1}]
        assert pid_of(winners[0]) in racer_pids
    # A real race, not a queue: in some round, losers' claims began before the winner's had returned.
    # (On a loaded 2-core machine one round can be serialised by the scheduler; five rarely all are.)
    assert any(overlaps), f"no claim overlapped the winner's in any round: {overlaps}"
