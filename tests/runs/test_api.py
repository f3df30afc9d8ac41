"""The JSON API: who may call what (token and session auth), browsing runs, keyset pages, docs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from durable import control
from durable.models import Run, Status
from runs.api import EventPage, RunDetail, RunPage, api
from runs.models import ApiToken
from tests.runs.api_support import API_ROLES, body, make_run, snapshot, stream_text

pytest_plugins = ["tests.runs.api_support"]
pytestmark = pytest.mark.django_db

OK, CREATED, UNAUTHORIZED, FORBIDDEN = 200, 201, 401, 403
VIEW = {"anonymous": UNAUTHORIZED, "nobody": FORBIDDEN, "operator": OK, "runadmin": OK, "staff": OK}
CONTROL = {"anonymous": UNAUTHORIZED, "nobody": FORBIDDEN, "operator": FORBIDDEN, "runadmin": OK, "staff": OK}


def _queued() -> Run:
    return control.start("demo.analysis", {"chunks": 1, "step_ms": 1})


# (method, path, run status needed, JSON body, expected per role); {run} is replaced by the run's id
MATRIX: dict[str, tuple[str, str, str | None, Any, dict[str, int]]] = {
    "list_runs": ("get", "/api/runs", None, None, VIEW),
    "get_run": ("get", "/api/runs/{run}", Status.SUCCEEDED, None, VIEW),
    "run_events": ("get", "/api/runs/{run}/events", Status.SUCCEEDED, None, VIEW),
    "stream_events": ("get", "/api/runs/{run}/events/stream", Status.SUCCEEDED, None, VIEW),
    "list_workflows": ("get", "/api/workflows", None, None, VIEW),
    "start_run": ("post", "/api/runs", None, {"workflow": "demo.analysis", "input": {"chunks": 1}},
                  CONTROL | {"runadmin": CREATED, "staff": CREATED}),
    "pause_run": ("post", "/api/runs/{run}/pause", Status.QUEUED, None, CONTROL),
    "resume_run": ("post", "/api/runs/{run}/resume", Status.PAUSED, None, CONTROL),
    "cancel_run": ("post", "/api/runs/{run}/cancel", Status.QUEUED, None, CONTROL),
    "retry_run": ("post", "/api/runs/{run}/retry", Status.FAILED, None, CONTROL),
    "send_event": ("post", "/api/runs/{run}/send-event", Status.WAITING, {"name": "approved", "data": {"ok": True}}, CONTROL),
}


def test_it_has_a_row_for_every_api_operation() -> None:
    operations = {  # the runs endpoints (other apps mount their routers under a prefix, with their own tests)
        op.view_func.__name__
        for prefix, router in api._routers
        if prefix == ""
        for path_view in router.path_operations.values()
        for op in path_view.operations
    }
    assert operations == set(MATRIX)


@pytest.mark.parametrize("role", API_ROLES)
@pytest.mark.parametrize("name", list(MATRIX))
def test_it_checks_permissions_on_every_endpoint(name: str, role: str, api_client: Any) -> None:
    method, path, needs, payload, expected = MATRIX[name]
    run = make_run(status=needs) if needs else None
    url = path.format(run=run.pk if run else 0)
    client = api_client(role)
    before = snapshot()
    if method == "get":
        response = client.get(url)
    else:
        response = client.post(url, payload or {}, content_type="application/json")
    assert response.status_code == expected[role], response.content
    if expected[role] >= 400:
        assert "detail" in body(response)
        assert snapshot() == before
    if response.streaming:
        stream_text(response)


def test_it_answers_401_with_a_bearer_challenge(api_client: Any) -> None:
    response = api_client("anonymous").get("/api/runs")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in body(response)["detail"]


# -- tokens -----------------------------------------------------------------------------------


def test_it_accepts_a_valid_token_and_records_its_use(cast: Any, tokens: Any) -> None:
    response = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['operator']}").get("/api/runs")
    assert response.status_code == 200
    assert ApiToken.objects.get(user=cast["operator"]).last_used_at is not None


def test_it_refuses_a_revoked_token(cast: Any, tokens: Any) -> None:
    ApiToken.objects.filter(user=cast["operator"]).revoke()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['operator']}").get("/api/runs")
    assert response.status_code == 401


def test_it_refuses_the_token_of_an_inactive_user(cast: Any, tokens: Any) -> None:
    cast["operator"].is_active = False
    cast["operator"].save()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['operator']}").get("/api/runs")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer nope", "Bearer dur_", "Bearer dur_not-a-real-token", "Token dur_x", "Basic Zm9vOmJhcg==",
     "Bearer dur_\u00e9\u00e9", "bearer " + "x" * 5000],
)
def test_it_refuses_malformed_tokens(header: str, tokens: Any) -> None:
    response = Client(HTTP_AUTHORIZATION=header).get("/api/runs")
    assert response.status_code == 401
    assert "detail" in body(response)


def test_it_refuses_a_token_with_another_tokens_prefix(tokens: Any) -> None:
    forged = tokens["runadmin"][:12] + "A" * (len(tokens["runadmin"]) - 12)
    assert Client(HTTP_AUTHORIZATION=f"Bearer {forged}").get("/api/runs").status_code == 401


def test_it_judges_a_request_with_a_bad_token_by_the_token_not_the_session(cast: Any) -> None:
    client = Client(HTTP_AUTHORIZATION="Bearer dur_wrong")
    client.force_login(cast["operator"])
    assert client.get("/api/runs").status_code == 401


def test_it_needs_no_csrf_token_with_a_bearer_token(tokens: Any) -> None:
    run = make_run(status=Status.QUEUED)
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {tokens['runadmin']}")
    assert client.post(f"/api/runs/{run.pk}/pause").status_code == 200


# -- session ----------------------------------------------------------------------------------


def test_it_accepts_the_browser_session_for_reading(cast: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["operator"])
    assert client.get("/api/runs").status_code == 200


def test_it_refuses_a_session_control_without_csrf(cast: Any) -> None:
    run = make_run(status=Status.QUEUED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["runadmin"])
    before = snapshot()
    response = client.post(f"/api/runs/{run.pk}/pause")
    assert response.status_code == 403
    assert "CSRF" in body(response)["detail"]
    assert snapshot() == before


def test_it_accepts_a_session_control_with_csrf(cast: Any) -> None:
    run = make_run(status=Status.QUEUED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["runadmin"])
    client.get("/api/docs")  # sets the csrftoken cookie, as the browser pages do
    csrf = client.cookies["csrftoken"].value
    response = client.post(f"/api/runs/{run.pk}/pause", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200
    assert body(response) == {"id": run.pk, "status": "paused"}


def test_it_answers_401_not_csrf_403_to_an_anonymous_post() -> None:
    response = Client(enforce_csrf_checks=True).post("/api/runs", {}, content_type="application/json")
    assert response.status_code == 401


# -- browsing ---------------------------------------------------------------------------------


def _all_pages(client: Client, query: str, limit: int) -> list[int]:
    ids: list[int] = []
    url = f"/api/runs?limit={limit}{query}"
    pages = 0
    while True:
        page = body(client.get(url))
        pages += 1
        assert len(page["items"]) <= limit
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        assert len(page["items"]) == limit
        url = f"/api/runs?limit={limit}{query}&cursor={page['next_cursor']}"
        assert pages < 100


def test_it_pages_by_keyset_without_duplicates_or_gaps_across_equal_timestamps(api_client: Any) -> None:
    moments = [timezone.now() - dt.timedelta(minutes=m) for m in (1, 2, 2, 2, 2, 2, 2, 3, 4, 4, 4, 4, 5)]
    runs = [make_run(status=Status.SUCCEEDED, created_at=moment) for moment in moments * 2]
    expected = [r.pk for r in sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)]
    client = api_client("operator")
    for limit in (1, 3, 5, 7, 26, 200):
        assert _all_pages(client, "", limit) == expected


def test_it_pages_a_filtered_list(api_client: Any) -> None:
    moment = timezone.now() - dt.timedelta(minutes=5)
    failed = [make_run(status=Status.FAILED, created_at=moment).pk for _ in range(7)]
    for _ in range(5):
        make_run(status=Status.SUCCEEDED, created_at=moment)
    assert _all_pages(api_client("operator"), "&status=failed", 3) == sorted(failed, reverse=True)


def test_it_filters_by_status_workflow_user_and_date(cast: Any, api_client: Any) -> None:
    now = timezone.now()
    a = make_run(status=Status.FAILED, workflow="wf.a", started_by=cast["runadmin"], created_at=now - dt.timedelta(days=3))
    b = make_run(status=Status.SUCCEEDED, workflow="wf.b", created_at=now - dt.timedelta(days=1))
    c = make_run(status=Status.PAUSED, workflow="wf.a", created_at=now)
    client = api_client("operator")

    def ids(query: str) -> list[int]:
        response = client.get("/api/runs?" + query)
        assert response.status_code == 200, response.content
        return [item["id"] for item in body(response)["items"]]

    assert ids("status=failed") == [a.pk]
    assert ids("status=failed&status=paused") == [c.pk, a.pk]
    assert ids("workflow=wf.a") == [c.pk, a.pk]
    assert ids("started_by=runadmin") == [a.pk]
    assert ids("started_by=nobody-at-all") == []
    since = (now - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (now - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={since}") == [c.pk, b.pk]
    assert ids(f"created_after={since}&created_before={until}") == [b.pk]


def test_it_describes_a_run_in_the_list(cast: Any, api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=3, started_by=cast["runadmin"])
    item = body(api_client("operator").get("/api/runs"))["items"][0]
    assert item["id"] == run.pk
    assert item["status"] == "succeeded" and item["steps"] == 3 and item["started_by"] == "runadmin"
    assert item["workflow"] == "demo.analysis" and item["finished_at"] is not None


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "limit=x", "status=bogus", "created_after=yesterday",
     "created_after=0001-01-01T00:00:00%2B14:00", "created_before=9999-12-31T23:00:00-14:00"],
)
def test_it_refuses_bad_list_parameters_with_422(query: str, api_client: Any) -> None:
    response = api_client("operator").get("/api/runs?" + query)
    assert response.status_code == 422
    assert body(response)["detail"]


@pytest.mark.parametrize(
    "cursor",
    ["nope", "bm9wZQ", "MjAyNi0wMS0wMXwx", "!!!", "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHwtNQ",
     "MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHwx"],  # the last: year 1 at +14:00, before UTC's year 1
)
def test_it_refuses_a_bad_cursor_with_400(cursor: str, api_client: Any) -> None:
    response = api_client("operator").get(f"/api/runs?cursor={cursor}")
    assert response.status_code == 400
    assert "cursor" in body(response)["detail"]


def test_it_returns_a_run_with_its_steps(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=4, input={"question": "why?"})
    detail = body(api_client("operator").get(f"/api/runs/{run.pk}"))
    assert detail["id"] == run.pk and detail["input"] == {"question": "why?"}
    assert [step["seq"] for step in detail["steps"]] == [0, 1, 2, 3]
    assert detail["steps"][2]["output"] == {"value": 2}
    assert detail["steps"][0]["duration_ms"] == pytest.approx(500)
    assert detail["event_seq"] == 5 and detail["next_seq"] == 4
    assert detail["lease"]["epoch"] == 1


@pytest.mark.parametrize("run_id", ["999999", "9223372036854775807", "99999999999999999999999"])
def test_it_answers_404_for_an_unknown_run(run_id: str, api_client: Any) -> None:
    response = api_client("operator").get(f"/api/runs/{run_id}")
    assert response.status_code == 404
    assert "no run" in body(response)["detail"]


def test_it_answers_large_reads_in_the_documented_shapes(api_client: Any) -> None:
    """List, detail and events skip response validation for speed; they must still fit their schemas."""
    run = make_run(status=Status.FAILED, steps=3)
    client = api_client("operator")
    RunPage.model_validate(body(client.get("/api/runs?limit=1")))
    RunDetail.model_validate(body(client.get(f"/api/runs/{run.pk}")))
    EventPage.model_validate(body(client.get(f"/api/runs/{run.pk}/events")))


def test_it_lists_workflows(api_client: Any) -> None:
    names = [wf["name"] for wf in body(api_client("operator").get("/api/workflows"))]
    assert "demo.analysis" in names


# -- schema and docs --------------------------------------------------------------------------


def test_it_serves_the_openapi_schema() -> None:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    schema = body(response)
    assert "/api/runs/{run_id}/events/stream" in schema["paths"]
    assert {"BearerToken", "SessionCookie"} <= set(schema["components"]["securitySchemes"])


def test_it_serves_the_docs_without_a_cdn() -> None:
    response = Client().get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in ("ninja/swagger-ui-bundle.js", "ninja/swagger-ui.css", "ninja/swagger-ui-init.js"):
        assert finders.find(asset), asset
