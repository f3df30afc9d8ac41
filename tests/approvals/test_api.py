"""The approvals JSON API (/api/approvals): who may call what, listing, deciding, the error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from approvals import decisions
from approvals.api import router
from approvals.models import Approval, AuditRecord
from approvals.policies import ApprovalPolicy
from durable import control
from runs.models import ApiToken
from runs.roles import OPERATORS, REVIEWERS, RUN_ADMINS
from tests.approvals.inbox_support import make_approval, state

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "nobody", "operator", "reviewer", "runadmin", "staff")
OK, CREATED, BAD, UNAUTHORIZED, FORBIDDEN = 200, 201, 400, 401, 403
REVIEWERS_ONLY = {"anonymous": UNAUTHORIZED, "nobody": FORBIDDEN, "operator": FORBIDDEN, "reviewer": OK,
                  "runadmin": FORBIDDEN, "staff": OK}

# operation -> (method, path, JSON body, expected per role); {id} is a pending approval's id
MATRIX: dict[str, tuple[str, str, Any, dict[str, int]]] = {
    "list_approvals": ("get", "/api/approvals", None, REVIEWERS_ONLY),
    "get_approval": ("get", "/api/approvals/{id}", None, REVIEWERS_ONLY),
    "approve": ("post", "/api/approvals/{id}/approve", {}, REVIEWERS_ONLY),
    "reject": ("post", "/api/approvals/{id}/reject", {"reason": "not needed"}, REVIEWERS_ONLY),
    "comment": ("post", "/api/approvals/{id}/comment", {"text": "looks fine"},
                REVIEWERS_ONLY | {"reviewer": CREATED, "staff": CREATED}),
}


def make_user(username: str, groups: tuple[str, ...] = (), *, staff: bool = False) -> User:
    user = User.objects.create_user(username, password="pw-for-tests-only", is_staff=staff, is_superuser=staff)
    user.groups.set([Group.objects.get(name=name) for name in groups])
    return user


@pytest.fixture
def cast(db: Any) -> dict[str, User | None]:
    return {
        "anonymous": None,
        "nobody": make_user("nobody"),
        "operator": make_user("operator", (OPERATORS,)),
        "reviewer": make_user("reviewer", (REVIEWERS,)),
        "runadmin": make_user("runadmin", (OPERATORS, RUN_ADMINS)),
        "staff": make_user("staff", staff=True),
    }


@pytest.fixture
def api(cast: dict[str, User | None]) -> Any:
    """`api(role)`: a client sending the role's bearer token (anonymous: none)."""
    tokens = {role: ApiToken.objects.create_token(user, "tests")[1] for role, user in cast.items() if user}

    def make(role: str) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {tokens[role]}") if role in tokens else Client()

    return make


def call(client: Client, method: str, path: str, payload: Any = None) -> Any:
    if method == "get":
        return client.get(path)
    return client.post(path, json.dumps(payload or {}), content_type="application/json")


def body(response: Any) -> Any:
    return json.loads(response.content)


def test_it_has_a_row_for_every_approvals_operation() -> None:
    operations = {op.view_func.__name__ for view in router.path_operations.values() for op in view.operations}
    assert operations == set(MATRIX)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(MATRIX))
def test_it_checks_permissions_on_every_endpoint(name: str, role: str, api: Any) -> None:
    method, path, payload, expected = MATRIX[name]
    approval = make_approval()
    before = state(approval)
    response = call(api(role), method, path.format(id=approval.pk), payload)
    assert response.status_code == expected[role], response.content
    if expected[role] >= 400:
        assert "detail" in body(response)
        assert state(approval) == before


def test_it_refuses_an_invalid_token_with_401(api: Any) -> None:
    approval = make_approval()
    response = Client(HTTP_AUTHORIZATION="Bearer dur_not-a-token").post(
        f"/api/approvals/{approval.pk}/approve", "{}", content_type="application/json")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_it_lists_pending_approvals_of_the_callers_groups_with_filters(api: Any, cast: Any) -> None:
    refund = make_approval(tool="refund", workflow="shop.support")
    email = make_approval(tool="send_email", workflow="shop.marketing")
    make_approval(group="run admins")
    decided = make_approval()
    decisions.decide(approval_id=decided.pk, user=cast["staff"], approved=True)
    client = api("reviewer")
    assert [a["id"] for a in body(client.get("/api/approvals"))["items"]] == [email.pk, refund.pk]
    assert [a["id"] for a in body(client.get("/api/approvals?sort=asc"))["items"]] == [refund.pk, email.pk]
    assert [a["id"] for a in body(client.get("/api/approvals?tool=refund"))["items"]] == [refund.pk]
    assert [a["id"] for a in body(client.get("/api/approvals?workflow=shop.marketing"))["items"]] == [email.pk]
    assert [a["id"] for a in body(client.get(f"/api/approvals?run={refund.run_id}"))["items"]] == [refund.pk]
    assert body(client.get("/api/approvals?age=1d"))["items"] == []
    item = body(client.get("/api/approvals?tool=refund"))["items"][0]
    assert item["arguments"] == {"order": "A-1", "amount": 250} and item["arguments_hash"] == refund.arguments_hash
    assert item["schema"]["required"] == ["order", "amount"] and item["workflow"] == "shop.support"
    assert len(body(api("staff").get("/api/approvals"))["items"]) == 3  # superusers: every group
    assert client.get("/api/approvals?age=forever").status_code == BAD
    assert client.get("/api/approvals?cursor=@@").status_code == BAD


def test_it_pages_with_a_cursor(api: Any) -> None:
    made = [make_approval() for _ in range(3)]
    client = api("reviewer")
    first = body(client.get("/api/approvals?limit=2"))
    second = body(client.get(f"/api/approvals?limit=2&cursor={first['next_cursor']}"))
    assert [a["id"] for a in first["items"] + second["items"]] == [a.pk for a in reversed(made)]
    assert second["next_cursor"] is None


def test_it_approves_with_edited_arguments_checked_against_the_schema(api: Any) -> None:
    approval = make_approval()
    client = api("reviewer")
    before = state(approval)
    bad = call(client, "post", f"/api/approvals/{approval.pk}/approve", {"arguments": {"order": "A-1", "amount": "x"}})
    assert bad.status_code == BAD and "edited arguments are invalid" in body(bad)["detail"]
    assert state(approval) == before
    good = call(client, "post", f"/api/approvals/{approval.pk}/approve",
                {"arguments": {"order": "A-1", "amount": 100}, "comment": "partial refund",
                 "expected_hash": approval.arguments_hash})
    assert good.status_code == OK
    data = body(good)
    assert data["status"] == "approved" and data["edited"] and data["final_arguments"]["amount"] == 100
    assert data["decided_by"] == "reviewer"
    assert AuditRecord.objects.get(approval=approval, action="approved").data["edited"] == {"amount": [250, 100]}


def test_it_rejects_with_a_reason_and_needs_one(api: Any) -> None:
    approval = make_approval()
    client = api("reviewer")
    missing = call(client, "post", f"/api/approvals/{approval.pk}/reject", {})
    assert missing.status_code == BAD and "needs a reason" in body(missing)["detail"]
    done = call(client, "post", f"/api/approvals/{approval.pk}/reject", {"reason": "duplicate"})
    assert done.status_code == OK and body(done)["status"] == "rejected" and body(done)["reason"] == "duplicate"


def test_it_answers_409_to_the_second_decision_saying_who_decided(api: Any) -> None:
    approval = make_approval()
    assert call(api("staff"), "post", f"/api/approvals/{approval.pk}/approve").status_code == OK
    after = state(approval)
    second = call(api("reviewer"), "post", f"/api/approvals/{approval.pk}/reject", {"reason": "no"})
    assert second.status_code == 409 and "already approved by staff" in body(second)["detail"]
    assert state(approval) == after


def test_it_refuses_a_decision_on_another_proposal(api: Any) -> None:
    approval = make_approval()
    before = state(approval)
    response = call(api("reviewer"), "post", f"/api/approvals/{approval.pk}/approve", {"expected_hash": "f" * 64})
    assert response.status_code == BAD and "different proposal" in body(response)["detail"]
    assert state(approval) == before


def test_it_answers_404_for_unknown_approvals(api: Any) -> None:
    client = api("reviewer")
    assert client.get("/api/approvals/999999").status_code == 404
    assert call(client, "post", "/api/approvals/999999/approve").status_code == 404
    assert call(client, "post", f"/api/approvals/{2**63}/reject", {"reason": "x"}).status_code == 404
    assert call(client, "post", "/api/approvals/999999/comment", {"text": "x"}).status_code == 404


def test_it_applies_four_eyes_and_groups(api: Any, cast: Any) -> None:
    own = make_approval(started_by=cast["reviewer"])
    foreign = make_approval(group="run admins")
    before = (state(own), state(foreign))
    four_eyes = call(api("reviewer"), "post", f"/api/approvals/{own.pk}/approve")
    group = call(api("reviewer"), "post", f"/api/approvals/{foreign.pk}/approve")
    assert four_eyes.status_code == FORBIDDEN and "four-eyes" in body(four_eyes)["detail"]
    assert group.status_code == FORBIDDEN and "only the group" in body(group)["detail"]
    assert (state(own), state(foreign)) == before


def test_it_reports_a_quorum_vote_as_still_pending(api: Any) -> None:
    approval = make_approval(policy=ApprovalPolicy(quorum=2))
    data = body(call(api("reviewer"), "post", f"/api/approvals/{approval.pk}/approve"))
    assert data["status"] == "pending" and data["votes"] == 1
    assert body(call(api("staff"), "post", f"/api/approvals/{approval.pk}/approve"))["status"] == "approved"


def test_it_answers_409_for_a_cancelled_run(api: Any) -> None:
    approval = make_approval()
    control.cancel(approval.run_id)
    response = call(api("reviewer"), "post", f"/api/approvals/{approval.pk}/approve")
    assert response.status_code == 409 and "cancelled with its run" in body(response)["detail"]


def test_it_needs_csrf_for_session_decisions(cast: Any) -> None:
    approval = make_approval()
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["reviewer"])
    assert client.get(f"/api/approvals/{approval.pk}").status_code == OK
    response = client.post(f"/api/approvals/{approval.pk}/approve", "{}", content_type="application/json")
    assert response.status_code == FORBIDDEN and "CSRF" in body(response)["detail"]
    assert Approval.objects.get(pk=approval.pk).status == "pending"
