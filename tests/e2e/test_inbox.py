"""The approval inbox in headless Chromium against real processes (the run browser's e2e harness:
daphne and `durable worker` on the test database).

A reviewer has the inbox open; runs started meanwhile ask for approval and their cards appear
without a reload, with the navigation count. With the keyboard the reviewer approves one and
rejects another with a reason; then opens the third, edits an argument (the difference is shown
before submitting), approves, and watches the run continue to its end on the run page.

Screenshots: tests/e2e/screenshots/inbox.png and approval-detail.png (copied to docs/screenshots/ when DURABLE_UPDATE_DOCS_SCREENSHOTS is set).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from approvals.models import Approval
from durable import control
from durable.models import Run, Status
from tests.e2e.test_run_browser import (  # noqa: F401  (servers, browser_page: fixtures)
    SCREENSHOTS,
    browser_page,
    log_in,
    make_login,
    servers,
    wait_until,
)
from tests.runs.ui import make_user

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CARD = "#inbox-cards .approval-card:not(.is-gone)"


def start_refund(order: str, amount: int, starter: Any) -> Run:
    return control.start("demo.refund", {"order": order, "amount": amount, "reason": "arrived damaged",
                                         "expires_after": 3600}, user=starter)


def approval_of(run: Run) -> Approval:
    return wait_until(lambda: Approval.objects.filter(run=run).first(), 30, f"run {run.pk} to ask for approval")


def test_a_reviewer_decides_live_approvals_and_watches_the_run_continue(servers: Any, browser_page: Any) -> None:
    url, processes = servers
    page = browser_page
    starter = make_user("sam", ("run admins",))  # four-eyes: someone else starts the runs
    make_login("rita", ("reviewers",))
    processes.worker("worker-1")
    log_in(page, url, "rita")

    page.goto(url + "/approvals/")
    page.wait_for_selector('#inbox-live [data-live-state][data-state="live"]')
    assert page.locator(CARD).count() == 0

    # New approvals appear while the page is open, newest first, and the count follows.
    runs = [start_refund(order, amount, starter) for order, amount in (("A-1042", 120), ("B-7781", 35), ("C-0093", 480))]
    approvals = [approval_of(run) for run in runs]
    for approval in approvals:
        page.wait_for_selector(f"#approval-{approval.pk}")
    page.wait_for_selector('#approvals-count[data-count="3"]')
    ids = page.eval_on_selector_all(CARD, "cards => cards.map(c => Number(c.dataset.approvalId))")
    assert ids == [a.pk for a in reversed(approvals)]
    page.wait_for_selector("#inbox-total >> text=3 pending")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)

    # Keyboard: j moves, a approves the current card.
    page.keyboard.press("j")
    page.wait_for_selector(f"#approval-{approvals[2].pk}.is-current")
    page.keyboard.press("j")
    page.wait_for_selector(f"#approval-{approvals[1].pk}.is-current")
    page.keyboard.press("k")
    page.wait_for_selector(f"#approval-{approvals[2].pk}.is-current")
    page.keyboard.press("a")
    page.wait_for_selector(f"#approval-{approvals[2].pk}.is-gone >> text=Approved by rita")
    # r opens the reason of the (new) current card; typing "a" there does not approve anything.
    page.keyboard.press("j")
    page.wait_for_selector(f"#approval-{approvals[1].pk}.is-current")
    page.keyboard.press("r")
    reason = page.locator(f"#reason-{approvals[1].pk}")
    assert reason.evaluate("element => element === document.activeElement")
    reason.type("a duplicate of another refund")
    reason.press("Enter")
    page.wait_for_selector(f"#approval-{approvals[1].pk}.is-gone >> text=Rejected by rita")
    page.wait_for_selector('#approvals-count[data-count="1"]')
    assert Approval.objects.get(pk=approvals[1].pk).reason == "a duplicate of another refund"

    # The detail: edit an argument, see the difference before submitting, approve.
    first = approvals[0]
    page.click(f"#approval-{first.pk} [data-open]")
    page.wait_for_selector('[data-approval-page] [data-live-state][data-state="live"]')
    assert "Refund 120 EUR on order A-1042" in page.inner_text(".approval-head")
    edited = dict(first.arguments, amount=90)
    page.fill("#id_arguments", json.dumps(edited, indent=2))
    page.wait_for_selector("#arguments-diff >> text=Your changes")
    assert "120" in page.inner_text("#arguments-diff") and "90" in page.inner_text("#arguments-diff")
    page.fill("#id_reason", "partial refund: the customer keeps the accessory")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky navigation bar stays at the top of the picture
    page.screenshot(path=str(SCREENSHOTS / "approval-detail.png"), full_page=True)
    page.click("#decide-form [data-action='approve']")
    page.wait_for_selector("[data-outcome] >> text=Approved by rita with edited arguments")
    page.wait_for_selector('#approval-status[data-status="approved"]')

    # The run continues with the edited arguments; its page shows it live.
    page.click(f"a[href='/runs/{first.run_id}/']")
    page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=60_000)
    run = Run.objects.get(pk=first.run_id)
    assert run.status == Status.SUCCEEDED and run.output["receipt"]["amount"] == 90
    rejected = wait_until(lambda: Run.objects.filter(pk=runs[1].pk, status=Status.SUCCEEDED).first(), 30, "the rejected run")
    assert rejected.output == {"refunded": False, "reason": "a duplicate of another refund", "decided_by": "rita"}
    wait_until(lambda: Run.objects.filter(pk=runs[2].pk, status=Status.SUCCEEDED).exists(), 30, "the approved run")

    if os.environ.get("DURABLE_UPDATE_DOCS_SCREENSHOTS"):  # refresh the README's pictures on request only
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("inbox.png", "approval-detail.png"):
            shutil.copyfile(SCREENSHOTS / name, DOCS_SCREENSHOTS / name)
