"""The run browser in headless Chromium against real processes: a daphne server and `durable worker`
processes on the test database. A run is started from the form and watched live; its worker is
SIGKILLed mid-run, another one takes over, and the page shows the recovery and the finished run.
Then pause, resume and cancel from the page, and the list receiving new runs without a reload.

Screenshots go to tests/e2e/screenshots/ (list.png, detail-recovery.png, controls.png).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from durable import control
from durable.models import Run, Status
from tests.runs.ui import PASSWORD, make_user

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def database_env() -> dict[str, str]:
    """Point a subprocess at this test's database (a file for SQLite, the test database on PostgreSQL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DURABLE_SQLITE_PATH")}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["DURABLE_SQLITE_PATH"] = str(db["NAME"])
    else:
        auth = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        env["DATABASE_URL"] = f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1", DURABLE_WORKERS="1")
    return env


class Processes:
    """Subprocesses, each in its own session so that a SIGKILL reaches its whole process group."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, *args], cwd=BASE_DIR, env=database_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        process = self.start(name, "manage.py", "durable", "worker", "--workers", "1")
        log = self.logs / f"{name}.log"
        wait_until(lambda: "worker started" in log.read_text(errors="replace") or process.poll() is not None,
                   60, f"{name} to start")
        assert process.poll() is None, log.read_text(errors="replace")
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.running:
            self.kill(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, Processes]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    pytest.importorskip("playwright.sync_api")
    processes = Processes(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daphne = processes.start("daphne", "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application")

    def answers() -> bool:
        assert daphne.poll() is None, (tmp_path / "daphne.log").read_text(errors="replace")
        try:
            return urllib.request.urlopen(url + "/login/", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_until(answers, 60, "daphne to answer")
        yield url, processes
    finally:
        processes.stop_all()


@pytest.fixture
def browser_page(servers: tuple[str, Processes], monkeypatch: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls of this test are
    # still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(WAIT_MS)
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            yield page
        finally:
            browser.close()
        assert not errors, errors


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1000  # the hash carries its iteration count; the server verifies it as usual


def make_login(username: str, groups: tuple[str, ...]) -> None:
    """A user the server processes can authenticate: the test settings hash passwords with MD5
    (fast), which the server's settings do not accept."""
    user = make_user(username, groups)
    hasher = QuickPBKDF2()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])


def log_in(page: Any, url: str, username: str) -> None:
    page.goto(url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs/$"))


def start_from_form(page: Any, url: str, input_json: str) -> int:
    page.goto(url + "/runs/new/")
    page.select_option("#id_workflow", "demo.analysis")
    page.fill("#id_input", input_json)
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    return int(re.search(r"/runs/(\d+)/$", page.url).group(1))


def steps_shown(page: Any, at_least: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#steps li.step').length >= {at_least}")


def status_is(page: Any, status: str, timeout: int = WAIT_MS) -> None:
    page.wait_for_selector(f'#run-status[data-status="{status}"]', timeout=timeout)


def test_it_shows_a_worker_crash_and_the_takeover_live(servers: Any, browser_page: Any) -> None:
    url, processes = servers
    page = browser_page
    make_login("ada", ("run admins",))
    first_worker = processes.worker("worker-1")
    log_in(page, url, "ada")

    run_id = start_from_form(page, url, '{"chunks": 12, "step_ms": 350}')
    page.wait_for_selector('[data-live-state][data-state="live"]')
    steps_shown(page, 3)  # steps arrive over the websocket, no reload
    processes.kill(first_worker)  # SIGKILL the whole process group, mid-run
    processes.worker("worker-2")

    recovery = page.locator("#steps li.recovery")
    recovery.filter(has_text="took over").wait_for()
    text = recovery.first.inner_text()
    assert re.search(r"worker \S+ stopped answering; worker \S+ took over at step \d+ after [\d.]+ s", text), text
    status_is(page, "succeeded", timeout=60_000)
    assert page.locator("#steps li.step").count() == 13  # 12 chunks + aggregate, none twice
    run = Run.objects.get(pk=run_id)
    assert run.recoveries >= 1 and run.steps.count() == 13
    page.locator("#steps li.recovery").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "detail-recovery.png"), full_page=True)


def test_it_pauses_resumes_and_cancels_from_the_page(servers: Any, browser_page: Any) -> None:
    url, processes = servers
    page = browser_page
    make_login("ada", ("run admins",))
    processes.worker("worker-1")
    log_in(page, url, "ada")

    run_id = start_from_form(page, url, '{"chunks": 60, "step_ms": 250}')
    steps_shown(page, 2)
    page.click('[data-control="pause"]')  # hx-post with hx-confirm (accepted by the dialog handler)
    status_is(page, "paused")
    paused_at = Run.objects.get(pk=run_id).next_seq
    page.wait_for_selector('[data-control="resume"]')
    page.screenshot(path=str(SCREENSHOTS / "controls.png"))
    page.click('[data-control="resume"]')
    page.wait_for_function(f"document.querySelectorAll('#steps li.step').length > {paused_at + 1}")
    status_is(page, "running")
    page.click('[data-control="cancel"]')
    status_is(page, "cancelled")
    assert Run.objects.get(pk=run_id).status == Status.CANCELLED
    assert page.locator("[data-control]").count() == 0  # nothing left to control

    # The list receives new runs and status changes without a reload.
    page.goto(url + "/runs/")
    page.wait_for_selector('[data-live-state][data-state="live"]')
    short = [control.start("demo.analysis", {"chunks": n, "step_ms": 40}) for n in (3, 5, 8)]
    broken = control.start("demo.analysis", {"chunks": "many"})  # fails: int("many")
    longer = control.start("demo.analysis", {"chunks": 200, "step_ms": 100})
    for run in short:
        page.wait_for_selector(f'#run-{run.pk} [data-status="succeeded"]')
    page.wait_for_selector(f'#run-{broken.pk} [data-status="failed"]')
    page.wait_for_selector(f'#run-{longer.pk} [data-status="running"]')
    page.wait_for_selector(f'#run-{run_id} [data-status="cancelled"]')
    page.wait_for_selector('#run-counts [data-status="succeeded"] .n:text("3")')  # the counts follow
    page.screenshot(path=str(SCREENSHOTS / "list.png"))
    control.cancel(longer.pk)

    # Dark mode: the toggle wins over the system setting and is remembered.
    page.emulate_media(color_scheme="light")
    page.click("[data-theme-toggle]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"

