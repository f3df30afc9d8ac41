"""Controls (pause, resume, cancel, retry), the start form, CSRF, login."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from durable import control
from durable.models import Event, Run, Status
from tests.runs.ui import PASSWORD, make_run

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

pytestmark = pytest.mark.django_db


def queued_run() -> Run:
    return control.start("demo.analysis", {"chunks": 1, "step_ms": 1})


def test_it_pauses_resumes_and_cancels_through_the_engine(client_for: Any, users: Any) -> None:
    run = queued_run()
    client = client_for("runadmin")
    response = client.post(reverse("runs:pause", args=[run.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("runs:detail", args=[run.pk])
    run.refresh_from_db()
    assert run.status == Status.PAUSED
    assert Event.objects.filter(run=run, type="run.pause_requested", data__by="runadmin").exists()
    client.post(reverse("runs:resume", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    client.post(reverse("runs:cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == Status.CANCELLED


def test_it_answers_htmx_with_the_new_header(client_for: Any) -> None:
    run = queued_run()
    response = client_for("runadmin").post(reverse("runs:pause", args=[run.pk]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.startswith('<section id="run-header"') and 'data-status="paused"' in html
    assert 'data-control="resume"' in html and 'data-control="pause"' not in html


def test_it_explains_a_control_that_does_not_apply(client_for: Any) -> None:
    run = make_run(status=Status.SUCCEEDED)
    client = client_for("runadmin")
    response = client.post(reverse("runs:cancel", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert "cannot cancel run" in response.content.decode()
    page = client.post(reverse("runs:retry", args=[run.pk]), follow=True)
    assert "cannot retry run" in page.content.decode()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED


def test_it_retries_a_failed_run(client_for: Any) -> None:
    run = make_run(status=Status.FAILED, steps=2, step_error="ValueError: boom", event_seq=3)
    client_for("staff").post(reverse("runs:retry", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == Status.QUEUED


@pytest.mark.parametrize("role", ["operator", "reviewer", "nobody"])
def test_it_refuses_controls_without_control_permission(client_for: Any, role: str) -> None:
    run = queued_run()
    for action in ("pause", "cancel"):
        assert client_for(role).post(reverse(f"runs:{action}", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == Status.QUEUED


def test_it_shows_controls_only_to_controllers(client_for: Any) -> None:
    run = queued_run()
    url = reverse("runs:detail", args=[run.pk])
    assert "data-control=" not in client_for("operator").get(url).content.decode()
    html = client_for("runadmin").get(url).content.decode()
    assert 'data-control="pause"' in html and 'data-control="cancel"' in html
    assert 'data-control="retry"' not in html
    assert "hx-confirm=" in html and 'name="csrfmiddlewaretoken"' in html


def test_it_refuses_a_post_without_the_csrf_token(users: Any) -> None:
    run = queued_run()
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["runadmin"])
    assert client.post(reverse("runs:pause", args=[run.pk])).status_code == 403
    assert client.post(reverse("runs:start"), {"workflow": "demo.analysis", "input": "{}"}).status_code == 403
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    # with the token (as the page's hx-headers send it) it works
    page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    assert client.post(reverse("runs:pause", args=[run.pk]), HTTP_X_CSRFTOKEN=token).status_code == 302


def test_it_starts_a_run_from_the_form(client_for: Any, users: Any) -> None:
    client = client_for("runadmin")
    form = client.get(reverse("runs:start")).content.decode()
    assert "demo.analysis" in form and "Analyse N data chunks" in form and "&quot;chunks&quot;: 20" in form
    response = client.post(reverse("runs:start"), {
        "workflow": "demo.analysis", "input": '{"chunks": 2, "step_ms": 1}', "idempotency_key": "form-1",
    })
    run = Run.objects.get(idempotency_key="form-1")
    assert response.status_code == 302 and response["Location"] == reverse("runs:detail", args=[run.pk])
    assert run.input == {"chunks": 2, "step_ms": 1} and run.started_by == users["runadmin"]
    assert run.status == Status.QUEUED
    # the same key and input again: the same run
    again = client.post(reverse("runs:start"), {
        "workflow": "demo.analysis", "input": '{"chunks": 2, "step_ms": 1}', "idempotency_key": "form-1",
    })
    assert again["Location"] == reverse("runs:detail", args=[run.pk])


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"workflow": "demo.analysis", "input": '{"chunks": 2,'}, "input", "is not valid JSON"),
        ({"workflow": "demo.analysis", "input": "[1, 2"}, "input", "line 1 column"),
        ({"workflow": "no.such.workflow", "input": "{}"}, "workflow", "Unknown workflow"),
        ({"workflow": "demo.analysis", "input": '"' + "x" * 2_000_000 + '"'}, "input", "over the limit"),
        ({"workflow": "demo.analysis", "input": "{}", "idempotency_key": "k" * 300}, "idempotency_key", "at most 255"),
    ],
)
def test_it_shows_start_errors_next_to_the_field(client_for: Any, data: dict[str, str], field: str, message: str) -> None:
    response = client_for("runadmin").post(reverse("runs:start"), data)
    assert response.status_code == 400
    html = response.content.decode()
    errors = re.search(r'<ul class="field-errors" id="[a-z]+-errors">(.*?)</ul>', html, re.DOTALL)
    assert errors and message in errors.group(1)
    assert f'id="id_{field}"' in html
    assert Run.objects.count() == 0


def test_it_reports_an_idempotency_conflict_on_the_key(client_for: Any) -> None:
    client = client_for("runadmin")
    client.post(reverse("runs:start"), {"workflow": "demo.analysis", "input": "{}", "idempotency_key": "same"})
    response = client.post(reverse("runs:start"), {"workflow": "demo.analysis", "input": '{"chunks": 3}',
                                                   "idempotency_key": "same"})
    assert response.status_code == 400
    assert "already used" in response.content.decode()


def test_it_logs_in_and_out(users: Any) -> None:
    client = Client()
    assert client.get(reverse("runs:list"))["Location"].startswith(reverse("login"))
    response = client.post(reverse("login"), {"username": "operator", "password": PASSWORD, "next": "/runs/"})
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert client.get("/runs/").status_code == 200
    bad = Client().post(reverse("login"), {"username": "operator", "password": "wrong"})
    assert bad.status_code == 200 and "didn't match" in bad.content.decode()
    client.post(reverse("logout"))
    assert client.get("/runs/").status_code == 302


def test_it_asks_a_run_admin_whether_a_cut_off_step_happened(client_for: Any) -> None:
    from durable.models import StepStatus

    run = make_run(status=Status.OUTCOME_UNKNOWN)
    run.steps.create(seq=0, name="send_payment", kind="tool", status=StepStatus.STARTED, epoch=1)
    client = client_for("runadmin")
    page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "Did step 0" in page and "send_payment" in page
    assert "Did step 0" not in client_for("operator").get(reverse("runs:detail", args=[run.pk])).content.decode()

    response = client.post(reverse("runs:resolve", args=[run.pk]), {"seq": 0, "happened": "yes", "output": '{"id": 7}'})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Status.QUEUED
    step = run.steps.get(seq=0)
    assert (step.status, step.output) == (StepStatus.COMPLETED, {"id": 7})


def test_it_refuses_a_malformed_resolve_answer(client_for: Any) -> None:
    from durable.models import StepStatus

    run = make_run(status=Status.OUTCOME_UNKNOWN)
    run.steps.create(seq=0, name="send_payment", kind="tool", status=StepStatus.STARTED, epoch=1)
    response = client_for("runadmin").post(
        reverse("runs:resolve", args=[run.pk]), {"seq": 0, "happened": "yes", "output": "{nope"}
    )
    assert response.status_code == 400 and b"not valid JSON" in response.content
    run.refresh_from_db()
    assert run.status == Status.OUTCOME_UNKNOWN
