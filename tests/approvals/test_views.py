"""The inbox, the detail, decisions, comments and signed links, through the browser's surface."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals import decisions, notify
from approvals.models import Approval, AuditRecord, Vote
from approvals.policies import ApprovalPolicy
from durable import control
from durable.models import Run, Status, Step
from tests.approvals.inbox_support import card_ids, logged_in, make_approval, state

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = pytest.mark.django_db


def decide_url(approval: Approval) -> str:
    return reverse("approvals:decide", args=[approval.pk])


def post_decision(client: Client, approval: Approval, **data: Any) -> Any:
    headers = {key: data.pop(key) for key in list(data) if key.startswith("HTTP_")}
    payload = {"decision": "approve", "expected_hash": approval.arguments_hash, **data}
    return client.post(decide_url(approval), payload, **headers)


@pytest.fixture
def admin_user(db: Any) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw")


# -- the inbox ------------------------------------------------------------------------------------------


def test_it_lists_the_pending_approvals_of_the_reviewers_groups(people: Any, admin_user: User) -> None:
    mine = make_approval(group="reviewers")
    theirs = make_approval(group="run admins")
    decided = make_approval(group="reviewers")
    decisions.decide(approval_id=decided.pk, user=people["bo"], approved=False, reason="no")

    assert card_ids(logged_in(people["ana"]).get(reverse("approvals:inbox")).content.decode()) == [mine.pk]
    assert set(card_ids(logged_in(people["boss"]).get(reverse("approvals:inbox")).content.decode())) == {mine.pk, theirs.pk}
    assert set(card_ids(logged_in(admin_user).get(reverse("approvals:inbox")).content.decode())) == {mine.pk, theirs.pk}


def test_it_sorts_newest_or_oldest_first(people: Any) -> None:
    old = make_approval(age=dt.timedelta(hours=2))
    new = make_approval(age=dt.timedelta(minutes=1))
    client = logged_in(people["ana"])
    assert card_ids(client.get(reverse("approvals:inbox")).content.decode()) == [new.pk, old.pk]
    assert card_ids(client.get(reverse("approvals:inbox"), {"sort": "asc"}).content.decode()) == [old.pk, new.pk]


def test_it_filters_by_workflow_tool_age_and_run(people: Any) -> None:
    refund = make_approval(tool="refund", workflow="shop.support", age=dt.timedelta(hours=3))
    email = make_approval(tool="send_email", workflow="shop.marketing", age=dt.timedelta(minutes=2))
    client = logged_in(people["ana"])

    def ids(**query: Any) -> list[int]:
        return card_ids(client.get(reverse("approvals:inbox"), query).content.decode())

    assert ids(workflow="shop.marketing") == [email.pk]
    assert ids(tool="refund") == [refund.pk]
    assert ids(age="1h") == [refund.pk]
    assert ids(run=email.run_id) == [email.pk]
    assert ids(tool="refund", workflow="shop.marketing") == []


def test_it_answers_htmx_filter_requests_with_the_results_only(people: Any) -> None:
    approval = make_approval()
    response = logged_in(people["ana"]).get(reverse("approvals:inbox"), {"tool": "refund"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert card_ids(html) == [approval.pk] and 'ws-connect="/ws/approvals/?' in html


def test_it_explains_filters_it_cannot_apply(people: Any) -> None:
    client = logged_in(people["ana"])
    response = client.get(reverse("approvals:inbox"), {"run": "abc", "age": "forever"})
    assert response.status_code == 400
    assert "cannot be applied" in response.content.decode()
    assert client.get(reverse("approvals:inbox"), {"cursor": "!!"}).status_code == 400


def test_it_pages_with_load_more(people: Any, monkeypatch: Any) -> None:
    from approvals import inbox

    monkeypatch.setattr(inbox, "PAGE_SIZE", 2)
    made = [make_approval(age=dt.timedelta(minutes=10 - i)) for i in range(5)]  # made[-1] is the newest
    client = logged_in(people["ana"])
    first = client.get(reverse("approvals:inbox")).content.decode()
    assert card_ids(first) == [made[4].pk, made[3].pk] and 'id="inbox-more"' in first
    cursor = first.split("cursor=")[1].split('"')[0]
    second = client.get(reverse("approvals:inbox") + f"?cursor={cursor}", HTTP_HX_REQUEST="true").content.decode()
    assert card_ids(second) == [made[2].pk, made[1].pk]
    assert "<html" not in second


def test_it_shows_the_pending_count_in_the_navigation(people: Any) -> None:
    make_approval()
    make_approval()
    make_approval(group="run admins")
    html = logged_in(people["ana"]).get(reverse("runs:list")).content.decode()
    assert 'id="approvals-count"' in html and 'data-count="2"' in html
    assert 'ws-connect="/ws/approvals/?view=count"' in html  # kept current on pages without an inbox socket
    html = logged_in(people["boss"]).get(reverse("approvals:inbox")).content.decode()
    assert 'data-count="3"' in html and "view=count" not in html  # the inbox's own socket keeps it current
    assert 'id="approvals-count"' not in logged_in(people["op"]).get(reverse("runs:list")).content.decode()


def test_it_keeps_the_inbox_from_users_who_are_not_reviewers(people: Any) -> None:
    assert logged_in(people["op"]).get(reverse("approvals:inbox")).status_code == 403
    response = Client().get(reverse("approvals:inbox"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_it_tells_the_run_starter_that_someone_else_decides(people: Any) -> None:
    make_approval(started_by=people["boss"])
    html = logged_in(people["boss"]).get(reverse("approvals:inbox")).content.decode()
    assert "someone else decides (four-eyes)" in html
    assert 'data-action="approve"' not in html


# -- the detail -------------------------------------------------------------------------------------------


def test_it_shows_the_proposed_call_escaped(people: Any) -> None:
    approval = make_approval(arguments={"order": "<script>alert(1)</script>", "amount": 5},
                             summary="<img src=x onerror=alert(2)>")
    html = logged_in(people["ana"]).get(reverse("approvals:detail", args=[approval.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;amount&quot;: 5" in html  # pretty JSON, escaped


def test_it_shows_what_led_to_the_request_policy_and_time_left(people: Any) -> None:
    policy = ApprovalPolicy(group="reviewers", quorum=2, expires_after=3600, fallback="escalate", escalate_to="run admins")
    approval = make_approval(policy=policy, steps=3, started_by=people["starter"])
    Step.objects.filter(run_id=approval.run_id, seq=1).update(
        kind="llm", name="scripted:m", input={"args": [{"turn": 1, "instructions": "Be careful", "new_messages": [
            {"role": "user", "content": "Refund order A-1 please"}]}]},
        output={"message": {"role": "assistant", "content": "", "tool_calls": [{"name": "refund", "arguments": {"amount": 250}}]}},
    )
    decisions.decide(approval_id=approval.pk, user=people["bo"], approved=True)  # one vote of two
    html = logged_in(people["ana"]).get(reverse("approvals:detail", args=[approval.pk])).content.decode()
    assert reverse("runs:detail", args=[approval.run_id]) in html
    for seq in range(3):
        assert reverse("runs:step", args=[approval.run_id, seq]) in html
    assert "Refund order A-1 please" in html and "Be careful" in html
    assert "2 approvals needed, 1 so far: bo" in html
    assert "starter started the run and may not decide it" in html
    assert "escalates to run admins" in html
    assert "data-countdown-to=" in html and "no expiry" not in html


def test_it_records_a_view_in_the_audit_trail(people: Any) -> None:
    approval = make_approval()
    logged_in(people["ana"]).get(reverse("approvals:detail", args=[approval.pk]))
    record = AuditRecord.objects.get(approval=approval, action="viewed")
    assert record.actor == people["ana"]


def test_it_answers_404_for_an_unknown_approval(people: Any) -> None:
    assert logged_in(people["ana"]).get(reverse("approvals:detail", args=[987654])).status_code == 404
    assert logged_in(people["ana"]).get(reverse("approvals:detail", args=[2**64])).status_code == 404
    assert logged_in(people["op"]).get(reverse("approvals:detail", args=[987654])).status_code == 403


def test_it_accepts_a_signed_link_but_still_needs_login_and_permission(people: Any) -> None:
    approval = make_approval()
    link = notify.signed_link(approval.pk)
    path = link.split("127.0.0.1:8000", 1)[1] if "127.0.0.1:8000" in link else link
    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert "link%3D" in anonymous["Location"] or "link=" in anonymous["Location"]
    assert logged_in(people["op"]).get(path).status_code == 403
    assert logged_in(people["ana"]).get(path).status_code == 200
    assert AuditRecord.objects.get(approval=approval, action="viewed").data == {"via": "link"}


def test_it_refuses_a_forged_or_foreign_link(people: Any) -> None:
    approval = make_approval()
    other = make_approval()
    client = logged_in(people["ana"])
    forged = client.get(reverse("approvals:detail", args=[approval.pk]), {"link": "forged"})
    foreign = client.get(reverse("approvals:detail", args=[approval.pk]),
                         {"link": notify.signed_link(other.pk).split("link=")[1]})
    assert forged.status_code == 400 and foreign.status_code == 400
    assert "not valid" in forged.content.decode()
    assert not AuditRecord.objects.filter(approval=approval, action="viewed").exists()


# -- decisions -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_approves_and_the_run_continues(refund_workflow: Any, people: Any) -> None:
    from tests.conftest import drain

    run = refund_workflow(user=people["starter"])
    approval = Approval.objects.get(run=run)
    response = post_decision(logged_in(people["ana"]), approval)
    assert response.status_code == 302 and response["Location"] == reverse("approvals:inbox")
    assert drain(run.pk).status == Status.SUCCEEDED
    assert refund_workflow.sent == [{"order": "A-1", "amount": 250}]


@pytest.mark.django_db(transaction=True)
def test_it_approves_edited_arguments_and_stores_the_difference(refund_workflow: Any, people: Any) -> None:
    from tests.conftest import drain

    run = refund_workflow(user=people["starter"])
    approval = Approval.objects.get(run=run)
    edited = json.dumps({"order": "A-1", "amount": 100}, indent=2)
    response = logged_in(people["ana"]).post(decide_url(approval), {
        "decision": "approve", "expected_hash": approval.arguments_hash, "arguments": edited, "view": "detail",
    }, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "with edited arguments" in html
    assert "amount" in html and "250" in html and "100" in html  # the stored difference is shown
    assert AuditRecord.objects.get(approval=approval, action="approved").data["edited"] == {"amount": [250, 100]}
    drain(run.pk)
    assert refund_workflow.sent == [{"order": "A-1", "amount": 100}]


def test_it_treats_unchanged_arguments_as_no_edit(people: Any) -> None:
    approval = make_approval()
    post_decision(logged_in(people["ana"]), approval, arguments=json.dumps(approval.arguments, indent=2))
    approval.refresh_from_db()
    assert approval.status == "approved" and not approval.edited


def test_it_rejects_with_a_reason_and_needs_one(people: Any) -> None:
    approval = make_approval()
    client = logged_in(people["ana"])
    before = state(approval)
    response = post_decision(client, approval, decision="reject", reason="   ")
    assert response.status_code == 400 and "needs a reason" in response.content.decode()
    assert state(approval) == before
    post_decision(client, approval, decision="reject", reason="customer already refunded")
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.reason == "customer already refunded"


def test_it_refuses_edited_arguments_that_fail_the_schema_with_a_form_error(people: Any) -> None:
    approval = make_approval()
    before = state(approval)
    client = logged_in(people["ana"])
    response = post_decision(client, approval, arguments='{"order": "A-1", "amount": "lots"}')
    assert response.status_code == 400
    html = response.content.decode()
    assert "edited arguments are invalid" in html and "has-error" in html
    assert "lots" in html  # the reviewer's text is kept in the form
    response = post_decision(client, approval, arguments='{"order": ')
    assert response.status_code == 400 and "not valid JSON" in response.content.decode()
    assert state(approval) == before


def test_it_refuses_a_decision_made_on_another_proposal(people: Any) -> None:
    approval = make_approval()
    before = state(approval)
    client = logged_in(people["ana"])
    response = post_decision(client, approval, expected_hash="0" * 64)
    assert response.status_code == 400 and "different proposal" in response.content.decode()
    response = client.post(decide_url(approval), {"decision": "approve"})
    assert response.status_code == 400 and "hash is missing" in response.content.decode()
    assert state(approval) == before


def test_it_tells_the_second_decider_who_decided_and_how(people: Any) -> None:
    approval = make_approval()
    assert post_decision(logged_in(people["ana"]), approval).status_code == 302
    after_first = state(approval)
    response = post_decision(logged_in(people["bo"]), approval, decision="reject", reason="no",
                             view="card", HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert "Too late: Approved by ana" in response.content.decode()
    assert response["X-Durable-Approval"] == "refused"
    plain = post_decision(logged_in(people["bo"]), approval)  # without htmx: the page, with the reason
    assert plain.status_code == 409 and "Approved by ana" in plain.content.decode()
    assert state(approval) == after_first


def test_it_answers_404_to_a_decision_on_an_unknown_approval(people: Any) -> None:
    response = logged_in(people["ana"]).post(reverse("approvals:decide", args=[424242]),
                                             {"decision": "approve", "expected_hash": "a" * 64})
    assert response.status_code == 404


def test_it_refuses_a_decision_without_csrf(people: Any) -> None:
    approval = make_approval()
    before = state(approval)
    client = logged_in(people["ana"], enforce_csrf_checks=True)
    assert post_decision(client, approval).status_code == 403
    assert state(approval) == before


def test_it_applies_four_eyes_through_the_ui(people: Any) -> None:
    approval = make_approval(started_by=people["starter"])
    before = state(approval)
    response = post_decision(logged_in(people["starter"]), approval, view="card", HTTP_HX_REQUEST="true")
    assert response.status_code == 403 and "four-eyes" in response.content.decode()
    assert state(approval) == before
    detail = logged_in(people["starter"]).get(reverse("approvals:detail", args=[approval.pk])).content.decode()
    assert "four-eyes rule" in detail and 'id="decide-form"' not in detail


def test_it_applies_the_deciding_group_through_the_ui(people: Any) -> None:
    approval = make_approval(group="run admins")
    before = state(approval)
    response = post_decision(logged_in(people["ana"]), approval)
    assert response.status_code == 403 and "only the group" in response.content.decode()
    assert state(approval) == before
    assert post_decision(logged_in(people["boss"]), approval).status_code == 302


def test_it_counts_quorum_votes_through_the_ui(people: Any) -> None:
    approval = make_approval(policy=ApprovalPolicy(quorum=2))
    response = post_decision(logged_in(people["ana"]), approval, view="detail", HTTP_HX_REQUEST="true")
    assert "quorum needs more reviewers" in response.content.decode()
    assert Vote.objects.filter(approval=approval).count() == 1
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    again = post_decision(logged_in(people["ana"]), approval)
    assert again.status_code == 400 and "already approved this" in again.content.decode()
    post_decision(logged_in(people["bo"]), approval)
    assert Approval.objects.get(pk=approval.pk).status == "approved"


def test_it_explains_that_a_cancelled_run_closed_the_approval(people: Any) -> None:
    approval = make_approval()
    control.cancel(approval.run_id)
    response = post_decision(logged_in(people["ana"]), approval, view="card", HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert f"run #{approval.run_id} was cancelled, nothing will run" in response.content.decode()


def test_it_explains_that_a_finished_run_cannot_use_a_decision(people: Any) -> None:
    approval = make_approval()
    Run.objects.filter(pk=approval.run_id).update(status=Status.FAILED)
    before = state(approval)
    response = post_decision(logged_in(people["ana"]), approval)
    assert response.status_code == 409 and "already failed" in response.content.decode()
    assert state(approval) == before


def test_it_answers_htmx_card_decisions_with_the_decided_card(people: Any) -> None:
    approval = make_approval()
    response = post_decision(logged_in(people["ana"]), approval, view="card", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and html.startswith(f'<article id="approval-{approval.pk}"')
    assert "is-gone" in html and "Approved by ana" in html


# -- preview, comments -------------------------------------------------------------------------------------


def test_it_previews_the_difference_before_submitting(people: Any) -> None:
    approval = make_approval()
    before = state(approval)
    client = logged_in(people["ana"])
    url = reverse("approvals:preview", args=[approval.pk])
    html = client.post(url, {"arguments": '{"order": "A-1", "amount": 90}'}).content.decode()
    assert "Your changes" in html and "250" in html and "90" in html
    assert "schema refuses" in client.post(url, {"arguments": '{"order": "A-1", "amount": 0}'}).content.decode()
    assert "not valid JSON" in client.post(url, {"arguments": "{"}).content.decode()
    assert "No changes" in client.post(url, {"arguments": json.dumps(approval.arguments)}).content.decode()
    assert state(approval) == before


def test_it_adds_comments_to_the_audit_trail(people: Any) -> None:
    approval = make_approval()
    client = logged_in(people["ana"])
    url = reverse("approvals:comment", args=[approval.pk])
    response = client.post(url, {"text": "asked the customer <b>first</b>"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "asked the customer &lt;b&gt;first&lt;/b&gt;" in html
    assert AuditRecord.objects.get(approval=approval, action="commented").data == {"text": "asked the customer <b>first</b>"}
    assert client.post(url, {"text": "  "}).status_code == 400
    assert Client().post(url, {"text": "x"}).status_code == 302
    assert logged_in(people["op"]).post(url, {"text": "x"}).status_code == 403
    assert AuditRecord.objects.filter(approval=approval, action="commented").count() == 1


# -- bulk ---------------------------------------------------------------------------------------------------


def test_it_decides_in_bulk_checking_each_approval_on_its_own(people: Any) -> None:
    fine = make_approval()
    also_fine = make_approval()
    own = make_approval(started_by=people["ana"])  # four-eyes: ana may not decide it
    taken = make_approval()
    decisions.decide(approval_id=taken.pk, user=people["bo"], approved=False, reason="no")
    stale = make_approval()
    selected = [f"{a.pk}:{a.arguments_hash}" for a in (fine, also_fine, own, taken)] + [f"{stale.pk}:{'0' * 64}"]
    response = logged_in(people["ana"]).post(reverse("approvals:bulk"), {"selected": selected, "decision": "approve"},
                                             HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "2 of 5 approved" in html
    assert f'data-result="{own.pk}" data-status="403"' in html and "Four-eyes rule" in html
    assert f'data-result="{taken.pk}" data-status="409"' in html and "Rejected by bo" in html
    assert f'data-result="{stale.pk}" data-status="400"' in html
    statuses = dict(Approval.objects.filter(pk__in=[fine.pk, also_fine.pk, own.pk, taken.pk, stale.pk]).values_list("pk", "status"))
    assert statuses == {fine.pk: "approved", also_fine.pk: "approved", own.pk: "pending", taken.pk: "rejected",
                        stale.pk: "pending"}
    assert f'id="approval-{fine.pk}"' in html and 'hx-swap-oob="true"' in html  # the decided cards update


def test_it_needs_a_reason_and_a_selection_to_reject_in_bulk(people: Any) -> None:
    approval = make_approval()
    before = state(approval)
    client = logged_in(people["ana"])
    selected = [f"{approval.pk}:{approval.arguments_hash}"]
    response = client.post(reverse("approvals:bulk"), {"selected": selected, "decision": "reject"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "needs a reason" in response.content.decode()
    response = client.post(reverse("approvals:bulk"), {"decision": "approve"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and "select at least one" in response.content.decode()
    response = client.post(reverse("approvals:bulk"), {"selected": ["1:nothex"], "decision": "approve"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert state(approval) == before
    client.post(reverse("approvals:bulk"), {"selected": selected, "decision": "reject", "reason": "duplicate"})
    assert Approval.objects.get(pk=approval.pk).reason == "duplicate"


# -- the built-in demo.refund workflow, end to end through the inbox --------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_demo_refund_through_the_inbox(people: Any, tmp_path: Any) -> None:
    from tests.conftest import drain

    effects = tmp_path / "ledger"
    run = control.start("demo.refund", {"order": "A-1042", "amount": 120, "effects_file": str(effects)},
                        user=people["starter"])
    assert drain(run.pk).status == Status.WAITING_APPROVAL
    client = logged_in(people["ana"])
    approval = Approval.objects.get(run=run)
    assert card_ids(client.get(reverse("approvals:inbox")).content.decode()) == [approval.pk]
    detail = client.get(reverse("approvals:detail", args=[approval.pk])).content.decode()
    assert "look_up_order" in detail and "Refund 120 EUR on order A-1042" in detail
    edited = dict(approval.arguments, amount=80)
    response = post_decision(client, approval, arguments=json.dumps(edited))
    assert response.status_code == 302
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output["receipt"]["amount"] == 80 and run.output["approved_by"] == "ana"
    assert effects.read_text().split() == [f"{run.pk}:2"]
