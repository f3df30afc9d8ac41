"""The run browser: list, detail, step and event fragments, controls and the start form.

Every view checks permission first through runs.access (PermissionDenied -> 403; anonymous users
are sent to the login page by @login_required before that). Pages work without JavaScript: every
htmx request has a plain href or form action beside it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from durable import control, registry
from durable.errors import DurableError, IdempotencyConflict, PayloadTooLarge, UnknownWorkflow
from durable.models import Step
from runs import access, listing, presenters
from runs.forms import ResolveForm, RunFilterForm, StartRunForm

CONTROLS = ("pause", "resume", "cancel", "retry")


def viewer_for(request: HttpRequest) -> presenters.Viewer:
    return presenters.Viewer(
        can_control=access.can_control_runs(request.user),
        can_see_tracebacks=access.can_see_tracebacks(request.user),
    )


@require_GET
@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    access.check_runs_permission(request.user)
    form = RunFilterForm(request.GET)
    context: dict[str, Any] = {
        "form": form,
        "can_control": access.can_control_runs(request.user),
        "workflow_names": [w.name for w in registry.all_workflows()],
    }
    if not form.is_valid():
        # A malformed filter is the client's mistake: say what is wrong, with a 400.
        template = "runs/_results.html" if request.htmx else "runs/list.html"
        return render(request, template, {**context, "invalid": True}, status=400)
    page = listing.page_of_runs(form)
    context.update(
        page=page, counts=listing.status_counts(form), filters=page.filters,
        since=timezone.now().isoformat(), live_new=page.is_first and form.cleaned_data["sort"] != "asc",
    )
    if request.htmx and not request.htmx.boosted:
        return render(request, "runs/_results.html", context)
    return render(request, "runs/list.html", context)


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = access.get_run_for_user(request.user, run_id)
    context = presenters.detail_context(run, viewer_for(request))
    return render(request, "runs/detail.html", context)


@require_GET
@login_required
def step_detail(request: HttpRequest, run_id: int, seq: int) -> HttpResponse:
    """A step's input, output and error: loaded when its <details> opens (or as a page without JS)."""
    run = access.get_run_for_user(request.user, run_id, fields=("id", "workflow", "status", "parent_id", "started_by"))
    step = Step.objects.filter(run_id=run.pk, seq=seq).first()
    if step is None:
        raise Http404(f"run {run.pk} has no step {seq}")
    context = {"run": run, **presenters.step_detail_context(step, viewer_for(request))}
    template = "runs/_step_body.html" if request.htmx else "runs/step.html"
    return render(request, template, context)


@require_GET
@login_required
def run_steps(request: HttpRequest, run_id: int) -> HttpResponse:
    """Earlier steps of a run's timeline, `?before=<seq>`: the "Show earlier steps" chunks."""
    run = access.get_run_for_user(request.user, run_id)
    before = _number(request.GET.get("before", ""))
    if before is None:
        return HttpResponse("before must be a step number", status=400, content_type="text/plain")
    context = presenters.timeline_context(
        run, viewer_for(request), before=before, limit=presenters.STEPS_PER_CHUNK
    )
    template = "runs/_steps_chunk.html" if request.htmx else "runs/steps.html"
    return render(request, template, context)


def _number(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) <= 10 else None


@require_GET
@login_required
def run_events(request: HttpRequest, run_id: int) -> HttpResponse:
    """Earlier events of a run, newest page first: `?before=<seq>`."""
    run = access.get_run_for_user(request.user, run_id, fields=("id", "workflow", "status", "parent_id", "started_by"))
    raw = request.GET.get("before", "")
    before = _number(raw) if raw else None
    if raw and before is None:
        return HttpResponse("before must be an event number", status=400, content_type="text/plain")
    events, earlier = presenters.recent_events(run, before=before)
    context = {
        "run": run,
        "events": [presenters.event_context(e) for e in events],
        "earlier_events": earlier,
        "first_event_seq": events[0].seq if events else None,
    }
    template = "runs/_events_page.html" if request.htmx else "runs/events.html"
    return render(request, template, context)


@require_POST
@login_required
def run_control(request: HttpRequest, run_id: int, action: str) -> HttpResponse:
    """Pause, resume, cancel or retry through durable.control. htmx gets the new header back (409
    with the engine's reason when the control does not apply); a plain form post is redirected."""
    if action not in CONTROLS:
        raise Http404(action)
    run = access.get_run_for_user(request.user, run_id, control=True)
    status = 200
    try:
        getattr(control, action)(run.pk, user=request.user)
        message, level = f"Run {run.pk}: {action} done.", messages.SUCCESS
    except DurableError as exc:
        message, level, status = str(exc), messages.WARNING, 409
    if not request.htmx:
        messages.add_message(request, level, message)
        return redirect("runs:detail", run_id=run.pk)
    run = access.get_run_for_user(request.user, run.pk)
    context = presenters.header_context(run, viewer_for(request))
    context["flash"] = {"text": message, "level": "success" if status == 200 else "warning"}
    return render(request, "runs/_header.html", context, status=status)


@require_POST
@login_required
def run_resolve(request: HttpRequest, run_id: int) -> HttpResponse:
    """Answer an outcome_unknown run: did the cut-off at-most-once step happen? (durable.control.resolve)"""
    run = access.get_run_for_user(request.user, run_id, control=True)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(e)}" for field, e in form.errors.items())
        return HttpResponse(f"Bad request: {errors}", status=400, content_type="text/plain")
    data = form.cleaned_data
    try:
        control.resolve(run.pk, data["seq"], happened=data["happened"] == "yes", output=data["output"],
                        user=request.user)
        messages.success(request, f"Run {run.pk}: step {data['seq']} resolved; the run continues.")
    except DurableError as exc:
        messages.warning(request, str(exc))
    return redirect("runs:detail", run_id=run.pk)


@require_http_methods(["GET", "POST"])
@login_required
def start_run(request: HttpRequest) -> HttpResponse:
    access.check_runs_permission(request.user, control=True)
    cards = _workflow_cards()
    initial: dict[str, str] = {}
    if cards:
        # The input starts as the chosen (or first) workflow's example, ready to edit.
        chosen = next((c for c in cards if c["name"] == request.GET.get("workflow")), cards[0])
        initial = {"workflow": chosen["name"], "input": chosen["example"]}
    form = StartRunForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = control.start(
                data["workflow"], data["input"], idempotency_key=data["idempotency_key"], user=request.user
            )
        except UnknownWorkflow as exc:
            form.add_error("workflow", str(exc))
        except IdempotencyConflict as exc:
            form.add_error("idempotency_key", str(exc))
        except (PayloadTooLarge, DurableError) as exc:
            form.add_error("input", str(exc))
        else:
            messages.success(request, f"Run {run.pk} started.")
            return redirect("runs:detail", run_id=run.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "runs/start.html", {"form": form, "workflows": cards}, status=status)


def _workflow_cards() -> list[dict[str, Any]]:
    cards = []
    for workflow in registry.all_workflows():
        example = workflow.input_example if workflow.input_example is not None else {}
        example_json, _ = presenters.pretty_json(example)
        cards.append({"name": workflow.name, "version": workflow.version,
                      "description": workflow.description, "example": example_json})
    return cards


def home(request: HttpRequest) -> HttpResponse:
    return redirect(reverse("runs:list"))
