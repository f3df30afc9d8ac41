"""The history of decided approvals, its filters, and time to decision per tool and reviewer."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals import decisions, stats
from approvals.models import Approval
from approvals.policies import ApprovalPolicy
from tests.approvals.inbox_support import logged_in, make_approval

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = pytest.mark.django_db


def decided(tool: str, user: Any, *, approve: bool = True, waited_s: float = 60, days_ago: int = 0) -> Approval:
    approval = make_approval(tool=tool)
    decisions.decide(approval_id=approval.pk, user=user, approved=approve, reason="" if approve else "no")
    at = timezone.now() - dt.timedelta(days=days_ago)
    Approval.objects.filter(pk=approval.pk).update(decided_at=at, created_at=at - dt.timedelta(seconds=waited_s))
    return Approval.objects.get(pk=approval.pk)


def rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="history-(\d+)"', html)]


def test_it_lists_decided_approvals_newest_first(people: Any) -> None:
    first = decided("refund", people["ana"], days_ago=2)
    second = decided("send_email", people["bo"], approve=False)
    make_approval()  # pending: not history
    html = logged_in(people["ana"]).get(reverse("approvals:history")).content.decode()
    assert rows(html) == [second.pk, first.pk]
    row = re.search(rf'<tr id="history-{second.pk}".*?</tr>', html, re.DOTALL).group(0)
    assert "rejected" in row and "bo" in row and "send_email" in row


def test_it_filters_by_status_tool_reviewer_and_date(people: Any) -> None:
    refund = decided("refund", people["ana"], days_ago=3)
    email = decided("send_email", people["bo"], approve=False)
    client = logged_in(people["cy"])

    def ids(**query: Any) -> list[int]:
        return rows(client.get(reverse("approvals:history"), query).content.decode())

    assert ids(status="rejected") == [email.pk]
    assert ids(tool="refund") == [refund.pk]
    assert ids(reviewer="ana") == [refund.pk]
    today = timezone.now().date()
    assert ids(decided_from=str(today - dt.timedelta(days=1))) == [email.pk]
    assert ids(decided_to=str(today - dt.timedelta(days=2))) == [refund.pk]
    response = client.get(reverse("approvals:history"), {"decided_from": "not-a-date"})
    assert response.status_code == 400


def test_it_shows_the_median_time_to_decision_per_tool_and_reviewer(people: Any) -> None:
    decided("refund", people["ana"], waited_s=10)
    decided("refund", people["ana"], waited_s=30)
    decided("refund", people["bo"], waited_s=600)
    decided("send_email", people["bo"], waited_s=5, approve=False)
    make_approval(tool="refund", policy=ApprovalPolicy(expires_after=1))
    assert decisions.expire_due(now=timezone.now() + dt.timedelta(days=1)) == 1  # expiry is no reviewer's latency
    latency = stats.time_to_decision({})
    by_tool = {item.key: item for item in latency["by_tool"]}
    by_reviewer = {item.key: item for item in latency["by_reviewer"]}
    assert by_tool["refund"].decisions == 3 and by_tool["refund"].median_s == pytest.approx(30, abs=1)
    assert by_tool["send_email"].rejected == 1
    assert by_reviewer["ana"].median_s == pytest.approx(20, abs=1)
    assert by_reviewer["bo"].median_s == pytest.approx(302.5, abs=1)
    html = logged_in(people["cy"]).get(reverse("approvals:history")).content.decode()
    assert "Time to decision" in html and "5 min" in html and "20 s" in html


def test_it_bounds_the_window_of_the_medians(people: Any) -> None:
    for waited in (10, 20, 30):
        decided("refund", people["ana"], waited_s=waited)
    assert stats.time_to_decision({}, window=2)["window"] == 2


def test_it_pages_the_history(people: Any, monkeypatch: Any) -> None:
    from approvals import views

    monkeypatch.setattr(views, "HISTORY_PAGE", 2)
    made = [decided("refund", people["ana"], days_ago=5 - i) for i in range(3)]
    client = logged_in(people["ana"])
    assert rows(client.get(reverse("approvals:history")).content.decode()) == [made[2].pk, made[1].pk]
    assert rows(client.get(reverse("approvals:history"), {"page": 2}).content.decode()) == [made[0].pk]
