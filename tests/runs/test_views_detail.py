"""The run detail page, step fragments, events, escaping, tracebacks by role, speed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from durable.models import Event, Run, Status
from runs import presenters
from tests.runs.ui import make_run

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

pytestmark = pytest.mark.django_db

TRACEBACK = 'Traceback (most recent call last):\n  File "secret_tool.py", line 3, in call\n    key="sk-live-123"\nValueError: the tool broke'


def detail(client: Any, run: Run) -> str:
    response = client.get(reverse("runs:detail", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_the_header_with_lease_and_recoveries(client_for: Any) -> None:
    run = make_run(steps=3, lease_owner="web-7:4242", lease_epoch=5, recoveries=2,
                   lease_expires_at=timezone.now() + dt.timedelta(seconds=1))
    html = detail(client_for("operator"), run)
    assert 'id="run-status"' in html and "running" in html
    assert "web-7:4242" in html and "epoch 5" in html
    assert "demo.analysis" in html and "v1" in html
    assert html.count('class="step status-completed"') == 3


def test_it_answers_404_for_an_unknown_run(client_for: Any) -> None:
    client = client_for("operator")
    assert client.get("/runs/999999/").status_code == 404
    assert client.get("/runs/99999999999999999999999999/").status_code == 404
    run = make_run(steps=1)
    assert client.get(f"/runs/{run.pk}/steps/7/").status_code == 404


def test_it_escapes_everything_a_model_or_tool_wrote(client_for: Any) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    run = make_run(steps=1, input={"prompt": evil}, output={"answer": evil}, status=Status.SUCCEEDED,
                   workflow="demo.<b>bold</b>")
    run.steps.update(name=evil, output={"text": evil})
    Event.objects.create(run=run, seq=99, type="event.received", data={"name": evil, "by": evil})
    client = client_for("runadmin")
    pages = [
        detail(client, run),
        client.get(reverse("runs:step", args=[run.pk, 0])).content.decode(),
        client.get(reverse("runs:step", args=[run.pk, 0]), HTTP_HX_REQUEST="true").content.decode(),
        client.get(reverse("runs:list")).content.decode(),
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert" in pages[0]


def test_it_shows_tracebacks_only_to_controllers_and_staff(client_for: Any, users: Any) -> None:
    run = make_run(steps=2, status=Status.FAILED, error=TRACEBACK, step_error=TRACEBACK)
    step_url = reverse("runs:step", args=[run.pk, 1])
    for role in ("operator", "reviewer"):
        html = detail(client_for(role), run) + client_for(role).get(step_url).content.decode()
        assert "ValueError: the tool broke" in html  # the last line, for everyone
        assert "sk-live-123" not in html
    for role in ("runadmin", "staff"):
        html = detail(client_for(role), run) + client_for(role).get(step_url).content.decode()
        assert "sk-live-123" in html
    # staff without control_run still sees them
    users["operator"].is_staff = True
    users["operator"].save()
    assert "sk-live-123" in client_for("operator").get(step_url).content.decode()


def test_it_loads_a_steps_input_and_output_as_pretty_json(client_for: Any) -> None:
    run = make_run(steps=2)
    run.steps.filter(seq=1).update(input={"args": [1, {"deep": True}]}, output={"value": [1, 2]})
    url = reverse("runs:step", args=[run.pk, 1])
    fragment = client_for("operator").get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment
    assert '&quot;deep&quot;: true' in fragment and "\n" in fragment
    page = client_for("operator").get(url).content.decode()
    assert "<html" in page and "Step 1" in page


def test_it_shows_a_recovery_where_it_happened(client_for: Any, settings: Any) -> None:
    settings.DURABLE = {**settings.DURABLE, "LEASE_SECONDS": 1.5}
    run = make_run(steps=5, events=False)
    base = run.created_at
    expired = base + dt.timedelta(seconds=3)
    rows = [
        ("run.created", {}, 0.0),
        ("run.claimed", {"worker": "alpha:1", "epoch": 1}, 0.1),
        ("run.recovered", {"previous_owner": "alpha:1", "epoch": 1, "at_step": 3,
                           "lease_expired_at": expired.isoformat(), "stalls": 1}, 3.2),
        ("run.claimed", {"worker": "beta:2", "epoch": 2}, 3.6),  # 0.6 s after expiry + 1.5 s lease = 2.1 s
    ]
    for seq, (kind, data, offset) in enumerate(rows, start=1):
        Event.objects.create(run=run, seq=seq, type=kind, data=data)
        Event.objects.filter(run=run, seq=seq).update(created_at=base + dt.timedelta(seconds=offset))
    html = detail(client_for("operator"), run)
    assert "worker alpha:1 stopped answering; worker beta:2 took over at step 3 after 2.1 s" in html
    # placed before step 3 in the timeline
    assert html.index('id="step-2"') < html.index('id="recovery-3"') < html.index('id="step-3"')


def test_it_shows_child_runs_as_a_tree(client_for: Any) -> None:
    root = make_run(steps=1)
    child = make_run(parent=root, workflow="demo.child")
    grandchild = make_run(parent=child, workflow="demo.grandchild")
    html = detail(client_for("operator"), child)
    assert f'href="/runs/{root.pk}/"' in html and f'href="/runs/{grandchild.pk}/"' in html
    assert "Run tree" in html


def test_it_lists_the_latest_events_and_loads_earlier_ones(client_for: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("runs.presenters.EVENTS_ON_PAGE", 5)
    run = make_run(steps=8)  # 9 events
    client = client_for("operator")
    html = detail(client, run)
    assert 'id="ev-9"' in html and 'id="ev-5"' in html and 'id="ev-4"' not in html
    assert '?before=5' in html
    earlier = client.get(reverse("runs:events", args=[run.pk]), {"before": 5}, HTTP_HX_REQUEST="true")
    fragment = earlier.content.decode()
    assert 'id="ev-4"' in fragment and 'id="ev-1"' in fragment and "?before=" not in fragment
    assert client.get(reverse("runs:events", args=[run.pk]), {"before": "x"}).status_code == 400


def test_it_renders_a_run_with_2000_steps_in_a_few_queries(client_for: Any) -> None:
    run = make_run(steps=2000)
    client = client_for("operator")
    detail(client, run)  # warm the template cache
    with CaptureQueriesContext(connection) as queries:
        html = detail(client, run)
    # The newest steps, and a link to the earlier ones; no query per step.
    assert html.count('class="step status-') == presenters.STEPS_ON_PAGE
    assert 'id="step-1999"' in html and f"?before={2000 - presenters.STEPS_ON_PAGE}" in html
    assert len(queries) <= 15, [q["sql"][:80] for q in queries.captured_queries]
    # Its server time (target 200 ms) is measured by bench/browser.py, not here.


def test_it_loads_earlier_steps_in_chunks_until_the_first(client_for: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("runs.presenters.STEPS_ON_PAGE", 4)
    monkeypatch.setattr("runs.presenters.STEPS_PER_CHUNK", 5)
    run = make_run(steps=12)
    client = client_for("operator")
    html = detail(client, run)
    assert [f'id="step-{i}"' in html for i in (7, 8, 11)] == [False, True, True]
    url = reverse("runs:steps", args=[run.pk])
    chunk = client.get(url, {"before": 8}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="step-3"' in chunk and 'id="step-7"' in chunk and 'id="step-2"' not in chunk
    assert "?before=3" in chunk
    last = client.get(url, {"before": 3}, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="step-0"' in last and "?before=" not in last
    assert client.get(url, {"before": "-1"}).status_code == 400
    assert "<html" in client.get(url, {"before": 3}).content.decode()  # a page without JavaScript
