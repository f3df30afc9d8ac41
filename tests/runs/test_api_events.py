"""Events after a sequence number: plain reads, long-poll and server-sent events."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test import AsyncClient

from durable import journal
from durable.models import Run, Status
from runs import api as api_module
from tests.runs.api_support import body, make_run, stream_text

pytest_plugins = ["tests.runs.api_support"]


def append_event(run_id: int, kind: str = "step.completed", *, finish: bool = False) -> None:
    """Commit one event from this thread's own connection, as a worker's checkpoint does."""
    try:
        with transaction.atomic():
            if finish:
                Run.objects.filter(pk=run_id).update(status=Status.SUCCEEDED)
            journal.append_events(run_id, [(kind, {"from": "test"})])
    finally:
        connection.close()


def append_later(run_id: int, delay: float) -> threading.Thread:
    def work() -> None:
        time.sleep(delay)
        append_event(run_id)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.mark.django_db
def test_it_returns_the_events_after_a_sequence_number(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=3)  # events 1..4
    page = body(api_client("operator").get(f"/api/runs/{run.pk}/events?after=2"))
    assert [event["seq"] for event in page["items"]] == [3, 4]
    assert page["items"][0]["type"] == "step.completed" and page["items"][0]["data"] == {"seq": 1}
    assert page["last_seq"] == 4 and page["status"] == "succeeded"


@pytest.mark.django_db
def test_it_pages_events_with_a_limit(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=5)
    client = api_client("operator")
    seen, after = [], 0
    while True:
        page = body(client.get(f"/api/runs/{run.pk}/events?after={after}&limit=2"))
        if not page["items"]:
            break
        seen += [event["seq"] for event in page["items"]]
        after = page["last_seq"]
    assert seen == [1, 2, 3, 4, 5, 6]


@pytest.mark.django_db
def test_it_answers_at_once_without_wait(api_client: Any) -> None:
    run = make_run(status=Status.RUNNING, steps=1)
    started = time.monotonic()
    page = body(api_client("operator").get(f"/api/runs/{run.pk}/events?after=2"))
    assert page == {"items": [], "last_seq": 2, "status": "running"}
    assert time.monotonic() - started < 1


@pytest.mark.django_db
def test_it_does_not_wait_on_a_finished_run(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=1)
    started = time.monotonic()
    page = body(api_client("operator").get(f"/api/runs/{run.pk}/events?after=2&wait=10"))
    assert page["items"] == []
    assert time.monotonic() - started < 2


@pytest.mark.django_db
def test_it_waits_then_answers_an_empty_page(api_client: Any) -> None:
    run = make_run(status=Status.RUNNING, steps=1)
    started = time.monotonic()
    page = body(api_client("operator").get(f"/api/runs/{run.pk}/events?after=2&wait=0.6"))
    elapsed = time.monotonic() - started
    assert page["items"] == [] and page["last_seq"] == 2
    assert 0.6 <= elapsed < 3


@pytest.mark.django_db(transaction=True)
def test_it_long_polls_and_returns_promptly_on_a_new_event(api_client: Any) -> None:
    run = make_run(status=Status.RUNNING, steps=1)  # events 1..2
    writer = append_later(run.pk, 0.3)
    started = time.monotonic()
    response = api_client("operator").get(f"/api/runs/{run.pk}/events?after=2&wait=20")
    elapsed = time.monotonic() - started
    writer.join()
    page = body(response)
    assert [event["seq"] for event in page["items"]] == [3]
    assert page["items"][0]["data"] == {"from": "test"}
    assert elapsed < 1.5, f"long-poll took {elapsed:.2f} s for an event committed after 0.3 s"


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["wait=31", "wait=-1", "after=-1", "after=x", "limit=0", "limit=1001", "after=9999999999"])
def test_it_refuses_bad_event_parameters_with_422(query: str, api_client: Any) -> None:
    run = make_run(status=Status.RUNNING)
    response = api_client("operator").get(f"/api/runs/{run.pk}/events?{query}")
    assert response.status_code == 422


@pytest.mark.django_db
def test_it_answers_404_for_events_of_an_unknown_run(api_client: Any) -> None:
    client = api_client("operator")
    assert client.get("/api/runs/424242/events?wait=5").status_code == 404
    assert client.get("/api/runs/424242/events/stream").status_code == 404


# -- server-sent events -----------------------------------------------------------------------


def parse_sse(text: str) -> list[dict[str, str]]:
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if fields:
            messages.append(fields)
    return messages


@pytest.mark.django_db
def test_it_streams_a_finished_runs_events_then_ends(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=2)
    response = api_client("operator").get(f"/api/runs/{run.pk}/events/stream")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    messages = parse_sse(stream_text(response))
    assert messages[0] == {"retry": "1000"}
    assert [m.get("id") for m in messages[1:4]] == ["1", "2", "3"]
    assert [m.get("event") for m in messages[1:4]] == ["run.created", "step.completed", "step.completed"]
    assert messages[-1]["event"] == "end" and '"last_seq": 3' in messages[-1]["data"]


@pytest.mark.django_db
def test_it_resumes_a_stream_after_last_event_id(api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED, steps=3)
    response = api_client("operator").get(f"/api/runs/{run.pk}/events/stream", HTTP_LAST_EVENT_ID="2")
    ids = [m["id"] for m in parse_sse(stream_text(response)) if "id" in m]
    assert ids == ["3", "4"]
    response = api_client("operator").get(f"/api/runs/{run.pk}/events/stream?after=3")
    assert [m["id"] for m in parse_sse(stream_text(response)) if "id" in m] == ["4"]


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["x", "-1", "99999999999"])
def test_it_refuses_a_bad_last_event_id(header: str, api_client: Any) -> None:
    run = make_run(status=Status.SUCCEEDED)
    response = api_client("operator").get(f"/api/runs/{run.pk}/events/stream", HTTP_LAST_EVENT_ID=header)
    assert response.status_code == 400


@pytest.mark.django_db
def test_it_ends_a_stream_after_its_time_budget(api_client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(api_module, "STREAM_SECONDS", 0.3)
    run = make_run(status=Status.RUNNING, steps=1)
    started = time.monotonic()
    messages = parse_sse(stream_text(api_client("operator").get(f"/api/runs/{run.pk}/events/stream")))
    assert [m.get("id") for m in messages if "id" in m] == ["1", "2"]
    assert time.monotonic() - started < 3


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_streams_new_events_as_they_commit(tokens: Any) -> None:
    run = await sync_to_async(make_run)(status=Status.RUNNING, steps=1)
    response = await AsyncClient().get(
        f"/api/runs/{run.pk}/events/stream", headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    assert response.status_code == 200
    chunks = aiter(response.streaming_content)

    async def next_message() -> dict[str, str]:
        while True:
            chunk = await asyncio.wait_for(anext(chunks), timeout=5)
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            messages = [m for m in parse_sse(text) if "id" in m or m.get("event") == "end"]
            if messages:
                return messages[0]

    assert (await next_message())["id"] == "1"
    assert (await next_message())["id"] == "2"
    started = time.monotonic()
    await sync_to_async(append_event, thread_sensitive=False)(run.pk)
    message = await next_message()
    assert message["id"] == "3" and time.monotonic() - started < 1.5
    await sync_to_async(append_event, thread_sensitive=False)(run.pk, "run.succeeded", finish=True)
    assert (await next_message())["event"] == "run.succeeded"
    assert (await next_message())["event"] == "end"
