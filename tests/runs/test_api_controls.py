"""Starting and steering runs through the API; bad input is refused and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from durable import control
from durable.models import Event, Run, Signal, Status
from tests.runs.api_support import body, make_run, snapshot

pytest_plugins = ["tests.runs.api_support"]
pytestmark = pytest.mark.django_db


def post(client: Any, url: str, payload: Any = None, raw: str | None = None) -> Any:
    data = raw if raw is not None else json.dumps(payload if payload is not None else {})
    return client.post(url, data, content_type="application/json")


def small_payload_limit() -> Any:
    return override_settings(DURABLE={**settings.DURABLE, "MAX_PAYLOAD_BYTES": 1000})


# -- start ------------------------------------------------------------------------------------


def test_it_starts_a_run_as_the_token_user(api_client: Any) -> None:
    response = post(api_client("runadmin"), "/api/runs", {"workflow": "demo.analysis", "input": {"chunks": 2}})
    assert response.status_code == 201
    created = body(response)
    run = Run.objects.get(pk=created["id"])
    assert run.status == Status.QUEUED and run.input == {"chunks": 2}
    assert run.started_by.username == "runadmin" and created["started_by"] == "runadmin"
    assert Event.objects.get(run=run, seq=1).data["by"] == "runadmin"


def test_it_starts_with_empty_input_when_none_is_given(api_client: Any) -> None:
    response = post(api_client("runadmin"), "/api/runs", {"workflow": "demo.analysis"})
    assert response.status_code == 201
    assert Run.objects.get(pk=body(response)["id"]).input == {}


def test_it_returns_the_existing_run_for_a_repeated_idempotency_key(api_client: Any) -> None:
    client = api_client("runadmin")
    payload = {"workflow": "demo.analysis", "input": {"chunks": 1}, "idempotency_key": "order-42"}
    first = post(client, "/api/runs", payload)
    second = post(client, "/api/runs", payload)
    assert (first.status_code, second.status_code) == (201, 200)
    assert body(first)["id"] == body(second)["id"]
    assert Run.objects.filter(idempotency_key="order-42").count() == 1


def test_it_refuses_an_idempotency_key_reused_with_other_input(api_client: Any) -> None:
    client = api_client("runadmin")
    post(client, "/api/runs", {"workflow": "demo.analysis", "input": {"chunks": 1}, "idempotency_key": "k"})
    before = snapshot()
    response = post(client, "/api/runs", {"workflow": "demo.analysis", "input": {"chunks": 2}, "idempotency_key": "k"})
    assert response.status_code == 409
    assert "idempotency key" in body(response)["detail"]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        ({"workflow": "no.such.workflow"}, 400, "unknown workflow"),
        ({"workflow": ""}, 422, ""),
        ({"input": {}}, 422, ""),
        ({"workflow": "demo.analysis", "idempotency_key": ""}, 422, ""),
        ({"workflow": "demo.analysis", "idempotency_key": "k" * 256}, 422, ""),
        ({"workflow": "demo.analysis", "idempotency_key": "   "}, 400, "idempotency key"),
        ({"workflow": 42}, 422, ""),
        ([1, 2], 422, ""),
    ],
)
def test_it_refuses_bad_start_requests_and_stores_nothing(payload: Any, status: int, says: str, api_client: Any) -> None:
    before = snapshot()
    response = post(api_client("runadmin"), "/api/runs", payload)
    assert response.status_code == status, response.content
    assert says in str(body(response)["detail"])
    assert snapshot() == before


@pytest.mark.parametrize("raw", ['{"workflow": "demo.analysis",', "not json", '{"workflow": "demo.analysis"}}', "\x00"])
def test_it_refuses_a_malformed_json_body_with_400(raw: str, api_client: Any) -> None:
    before = snapshot()
    response = post(api_client("runadmin"), "/api/runs", raw=raw)
    assert response.status_code == 400
    assert "parse" in body(response)["detail"].lower()
    assert snapshot() == before


def test_it_refuses_an_oversized_input_with_413(api_client: Any) -> None:
    before = snapshot()
    with small_payload_limit():
        response = post(api_client("runadmin"), "/api/runs", {"workflow": "demo.analysis", "input": {"text": "x" * 2000}})
    assert response.status_code == 413
    assert "over the limit" in body(response)["detail"]
    assert snapshot() == before


def test_it_refuses_a_body_larger_than_the_server_accepts_with_413(api_client: Any) -> None:
    before = snapshot()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = post(api_client("runadmin"), "/api/runs", {"workflow": "demo.analysis", "input": {"text": "x" * 5000}})
    assert response.status_code == 413
    assert snapshot() == before


# -- pause, resume, cancel, retry -------------------------------------------------------------


def test_it_pauses_resumes_and_cancels(api_client: Any) -> None:
    run = control.start("demo.analysis", {"chunks": 1})
    client = api_client("runadmin")
    assert body(post(client, f"/api/runs/{run.pk}/pause")) == {"id": run.pk, "status": "paused"}
    assert body(post(client, f"/api/runs/{run.pk}/resume")) == {"id": run.pk, "status": "queued"}
    response = post(client, f"/api/runs/{run.pk}/cancel", {"reason": "not needed"})
    assert body(response) == {"id": run.pk, "status": "cancelled"}
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    cancelled = Event.objects.get(run=run, type="run.cancelled")
    assert cancelled.data == {"by": "runadmin", "reason": "not needed"}


def test_it_cancels_without_a_body(api_client: Any) -> None:
    run = make_run(status=Status.WAITING)
    response = api_client("runadmin").post(f"/api/runs/{run.pk}/cancel", "", content_type="application/json")
    assert response.status_code == 200, response.content
    assert Run.objects.get(pk=run.pk).status == Status.CANCELLED


def test_it_retries_a_failed_run(api_client: Any) -> None:
    run = make_run(status=Status.FAILED, steps=2)
    response = post(api_client("runadmin"), f"/api/runs/{run.pk}/retry")
    assert body(response) == {"id": run.pk, "status": "queued"}
    assert Run.objects.get(pk=run.pk).status == Status.QUEUED


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "retry"])
@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.CANCELLED])
def test_it_answers_409_to_a_control_on_a_finished_run_and_changes_nothing(action: str, status: str, api_client: Any) -> None:
    run = make_run(status=status, steps=1)
    before = snapshot()
    response = post(api_client("runadmin"), f"/api/runs/{run.pk}/{action}")
    assert response.status_code == 409
    assert f"cannot {action} run {run.pk}" in body(response)["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "retry", "send-event"])
def test_it_answers_404_to_a_control_on_an_unknown_run(action: str, api_client: Any) -> None:
    before = snapshot()
    response = post(api_client("runadmin"), f"/api/runs/987654/{action}", {"name": "x"})
    assert response.status_code == 404
    assert snapshot() == before


def test_it_answers_403_before_404_without_the_control_permission(api_client: Any) -> None:
    assert post(api_client("operator"), "/api/runs/987654/pause").status_code == 403


def test_it_refuses_get_on_a_control(api_client: Any) -> None:
    run = make_run(status=Status.QUEUED)
    assert api_client("runadmin").get(f"/api/runs/{run.pk}/pause").status_code == 405


# -- send-event -------------------------------------------------------------------------------


def test_it_sends_an_event_to_a_waiting_run(api_client: Any) -> None:
    run = make_run(status=Status.WAITING)
    response = post(api_client("runadmin"), f"/api/runs/{run.pk}/send-event", {"name": "approved", "data": {"by": "ana"}})
    assert response.status_code == 200
    signal = Signal.objects.get(run=run)
    assert (signal.name, signal.data) == ("approved", {"by": "ana"})
    assert Event.objects.filter(run=run, type="event.received", data__by="runadmin").exists()


@pytest.mark.parametrize(
    ("payload", "status"),
    [({"name": ""}, 422), ({"data": 1}, 422), ({"name": "x" * 201}, 422), ({"name": 5}, 422)],
)
def test_it_refuses_a_bad_event_and_stores_nothing(payload: Any, status: int, api_client: Any) -> None:
    run = make_run(status=Status.WAITING)
    before = snapshot()
    response = post(api_client("runadmin"), f"/api/runs/{run.pk}/send-event", payload)
    assert response.status_code == status
    assert snapshot() == before


def test_it_refuses_an_oversized_event_with_413(api_client: Any) -> None:
    run = make_run(status=Status.WAITING)
    before = snapshot()
    with small_payload_limit():
        response = post(api_client("runadmin"), f"/api/runs/{run.pk}/send-event", {"name": "big", "data": "x" * 5000})
    assert response.status_code == 413
    assert snapshot() == before


def test_it_answers_409_to_an_event_for_a_finished_run(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED)
    before = snapshot()
    response = post(api_client("runadmin"), f"/api/runs/{run.pk}/send-event", {"name": "late"})
    assert response.status_code == 409
    assert snapshot() == before


# -- text PostgreSQL cannot store -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "payload"),
    [
        ("/api/runs", {"workflow": "demo.analysis", "idempotency_key": "a\x00b"}),
        ("/api/runs", {"workflow": "demo.analysis", "input": {"text": "x\x00"}}),
        ("/api/runs", {"workflow": "demo.analysis", "input": {"key\x00": 1}}),
        ("/api/runs", {"workflow": "demo.analysis", "input": ["ok", ["\ud800"]]}),
        ("/api/runs", {"workflow": "demo.analysis\x00"}),
        ("/api/runs/{run}/send-event", {"name": "x\x00"}),
        ("/api/runs/{run}/send-event", {"name": "x", "data": {"deep": ["\x00"]}}),
        ("/api/runs/{run}/cancel", {"reason": "\x00"}),
    ],
)
def test_it_refuses_nul_and_lone_surrogates_with_422(url: str, payload: Any, api_client: Any) -> None:
    run = make_run(status=Status.WAITING)
    before = snapshot()
    raw = json.dumps(payload)  # \u0000 and \ud800 escapes, as a client would send them
    response = post(api_client("runadmin"), url.format(run=run.pk), raw=raw)
    assert response.status_code == 422, response.content
    assert snapshot() == before


@pytest.mark.parametrize("query", ["workflow=%00", "started_by=a%00b"])
def test_it_refuses_nul_in_list_filters_with_422(query: str, api_client: Any) -> None:
    assert api_client("operator").get(f"/api/runs?{query}").status_code == 422


def test_it_answers_400_when_the_database_refuses_a_value(api_client: Any, monkeypatch: Any) -> None:
    from django.db import DataError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise DataError("value too long for type character varying(200)")

    monkeypatch.setattr(control, "start", refuse)
    response = post(api_client("runadmin"), "/api/runs", {"workflow": "demo.analysis"})
    assert response.status_code == 400
    assert "refused" in body(response)["detail"]
