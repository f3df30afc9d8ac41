"""The approval inbox: pending approvals of the reviewer's groups, the detail of one, decisions
(approve, reject with a reason, edit then approve, comment, bulk), and the history of decisions.

Every view checks permission first (`_check_reviewer`, PermissionDenied -> 403; anonymous users are
sent to the login page by @login_required before that). Every decision goes through
approvals.decisions.decide, with the arguments_hash of the proposal the reviewer saw, so a decision on
another proposal, a second decision and a decision on a finished run are refused there, with the
error's HTTP status (400, 403, 404, 409). Pages work without JavaScript: forms post and redirect.
"""

from __future__ import annotations

from typing import Any

from django import forms as django_forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from approvals import decisions, inbox, notify, presenters, stats
from approvals.forms import (
    BulkForm,
    CommentForm,
    DecisionForm,
    HistoryFilterForm,
    InboxFilterForm,
    PreviewForm,
    parse_arguments,
)
from approvals.models import Approval, AuditRecord
from approvals.schema import SchemaError, validate
from durable import registry

OUTCOME_HEADER = "X-Durable-Approval"  # marks fragments that explain a refusal (static/js/inbox.js swaps them)
HISTORY_PAGE = 50


def _check_reviewer(user: Any) -> None:
    if not inbox.can_review(user):
        raise PermissionDenied("only reviewers (approvals.decide_approval) use the approval inbox")


def _get_approval_for_user(user: Any, approval_id: Any) -> Approval:
    """The approval, after the permission check (ids cannot be probed without permission)."""
    _check_reviewer(user)
    try:
        return decisions.get_approval(approval_id)
    except (decisions.ApprovalNotFound, OverflowError):
        raise Http404(f"no approval {approval_id}") from None


def audit_cursor() -> int:
    """The newest audit record id: read before the page's query, so the live socket replays anything
    that changed between the two (index: the primary key)."""
    return AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0


# -- the inbox ----------------------------------------------------------------------------------------


@require_GET
@login_required
def inbox_view(request: HttpRequest) -> HttpResponse:
    _check_reviewer(request.user)
    form = InboxFilterForm(request.GET)
    cursor_raw = request.GET.get("cursor", "")
    if not form.is_valid() or (cursor_raw and inbox.decode_cursor(cursor_raw) is None):
        context = {"form": form, "invalid": True, "workflow_names": _workflow_names(), "tools": []}
        template = "approvals/_results.html" if request.htmx else "approvals/inbox.html"
        return render(request, template, context, status=400)
    filters = form.filters()
    cursor = audit_cursor()
    now = timezone.now()
    page = inbox.page(request.user, filters, now, cursor=inbox.decode_cursor(cursor_raw) if cursor_raw else None)
    votes = inbox.vote_counts([a.pk for a in page.items])
    context: dict[str, Any] = {
        "form": form,
        "filters": filters,
        "params": filters.params(),
        "cards": [presenters.card_context(a, request.user, votes) for a in page.items],
        "next_cursor": page.next_cursor,
        "audit_cursor": cursor,
        "since": now.isoformat(),
    }
    if cursor_raw and request.htmx:
        return render(request, "approvals/_page.html", context)  # "Load more": the next cards
    context["total"] = inbox.filtered(request.user, filters, now).count()
    if request.htmx and not request.htmx.boosted:
        return render(request, "approvals/_results.html", context)
    context.update(workflow_names=_workflow_names(), tools=inbox.distinct_tools(request.user))
    return render(request, "approvals/inbox.html", context)


def _workflow_names() -> list[str]:
    return [w.name for w in registry.all_workflows()]


# -- one approval --------------------------------------------------------------------------------------


@require_GET
@login_required
def detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    """The proposed call, what led to it, the policy, the time left, the decision forms. Opening it
    is recorded in the audit trail. `?link=` is the signed token of a notification email: checked,
    but never a substitute for login and permission."""
    approval = _get_approval_for_user(request.user, approval_id)
    link = request.GET.get("link")
    if link is not None:
        if not notify.check_link(approval.pk, link):
            context = {"a": approval}
            return render(request, "approvals/bad_link.html", context, status=400)
        decisions.audit(approval, "viewed", request.user, via="link")
    else:
        decisions.record_view(approval, request.user)
    return _render_detail(request, approval)


def _render_detail(request: HttpRequest, approval: Approval, *, form: DecisionForm | None = None,
                   message: str = "", status: int = 200) -> HttpResponse:
    context = presenters.detail_context(approval, request.user)
    context["audit_cursor"] = audit_cursor()
    context["decision"].update(form=form, message=message, message_tone="bad" if status >= 400 else "good")
    return render(request, "approvals/detail.html", context, status=status)


def _refusal_text(exc: decisions.ApprovalError) -> str:
    if isinstance(exc, decisions.AlreadyDecided):
        return f"Too late: {presenters.outcome_text(exc.approval)}."
    return str(exc)[:1].upper() + str(exc)[1:]


@require_POST
@login_required
def decide(request: HttpRequest, approval_id: int) -> HttpResponse:
    """Approve, edit then approve, or reject. Exactly one decision wins; a loser is told who decided
    and how (409)."""
    approval = _get_approval_for_user(request.user, approval_id)
    form = DecisionForm(request.POST)
    as_card = request.POST.get("view") == "card"
    if not form.is_valid():
        return _decision_response(request, approval, form=form, as_card=as_card, status=400,
                                  message="; ".join(e for errors in form.errors.values() for e in errors))
    data = form.cleaned_data
    arguments = data["arguments"]
    if arguments is not None and arguments == approval.arguments:
        arguments = None  # the textarea came back unchanged: not an edit
    try:
        decided = decisions.decide(
            approval_id=approval.pk, user=request.user, approved=data["decision"] == "approve",
            reason=data["reason"], arguments=arguments, expected_hash=data["expected_hash"],
        )
    except decisions.InvalidArguments as exc:
        form.add_error("arguments", str(exc))
        return _decision_response(request, approval, form=form, as_card=as_card, status=400, message=str(exc))
    except decisions.ApprovalError as exc:
        fresh = decisions.get_approval(approval.pk)
        return _decision_response(request, fresh, form=form, as_card=as_card, status=exc.status_code,
                                  message=_refusal_text(exc))
    text = f"Approval {decided.pk}: {presenters.outcome_text(decided)}."
    if decided.status == "pending":  # a quorum vote
        text = f"Approval {decided.pk}: your approval is counted; the quorum needs more reviewers."
    return _decision_response(request, decided, as_card=as_card, status=200, message=text)


def _decision_response(request: HttpRequest, approval: Approval, *, as_card: bool, status: int, message: str,
                       form: DecisionForm | None = None) -> HttpResponse:
    if not request.htmx:
        if status == 200:
            messages.success(request, message)
            return redirect("approvals:inbox")
        return _render_detail(request, approval, form=form, message=message, status=status)
    if as_card:
        votes = inbox.vote_counts([approval.pk])
        context = presenters.card_context(approval, request.user, votes, gone=approval.status != "pending")
        context.update(message=message, message_tone="good" if status == 200 else "bad")
        response = render(request, "approvals/_card.html", context, status=status)
    else:
        context = {"decision": presenters.decision_context(approval, request.user)}
        context["decision"].update(form=form, message=message, message_tone="good" if status == 200 else "bad")
        context.update(policy=presenters.policy_view(approval), oob_extras=True)
        response = render(request, "approvals/_decision.html", context, status=status)
    response[OUTCOME_HEADER] = "decided" if status == 200 else "refused"
    return response


@require_POST
@login_required
def preview(request: HttpRequest, approval_id: int) -> HttpResponse:
    """The difference between the proposal and the edited arguments, and whether the tool's schema
    accepts them: shown before the reviewer submits. Changes nothing."""
    approval = _get_approval_for_user(request.user, approval_id)
    form = PreviewForm(request.POST)
    context: dict[str, Any] = {"a": approval, "problem": "", "rows": [], "unchanged": False}
    text = form.data.get("arguments", "").strip() if form.is_valid() else ""
    if not text:
        context["unchanged"] = True
        return render(request, "approvals/_diff.html", context)
    try:
        edited = parse_arguments(text)
    except django_forms.ValidationError as exc:
        context["problem"] = " ".join(exc.messages)
        return render(request, "approvals/_diff.html", context)
    if approval.schema:
        try:
            validate(edited, approval.schema)
        except SchemaError as exc:
            context["problem"] = f"the tool's schema refuses these arguments: {exc}"
    context["rows"] = presenters.diff_rows(approval.arguments, edited)
    context["unchanged"] = not context["rows"]
    return render(request, "approvals/_diff.html", context)


@require_POST
@login_required
def comment(request: HttpRequest, approval_id: int) -> HttpResponse:
    approval = _get_approval_for_user(request.user, approval_id)
    form = CommentForm(request.POST)
    status, message = 200, ""
    if form.is_valid():
        try:
            decisions.comment(approval_id=approval.pk, user=request.user, text=form.cleaned_data["text"])
            message = "Comment added."
        except decisions.ApprovalError as exc:
            status, message = exc.status_code, str(exc)
    else:
        status, message = 400, "; ".join(e for errors in form.errors.values() for e in errors)
    if not request.htmx:
        if status == 200:
            messages.success(request, message)
            return redirect("approvals:detail", approval_id=approval.pk)
        return _render_detail(request, approval, message=message, status=status)
    context = {"a": approval, "audit": presenters.audit_entries(approval), "comment_message": message,
               "comment_tone": "good" if status == 200 else "bad"}
    response = render(request, "approvals/_audit.html", context, status=status)
    response[OUTCOME_HEADER] = "commented" if status == 200 else "refused"
    return response


@require_POST
@login_required
def bulk(request: HttpRequest) -> HttpResponse:
    """Approve or reject the selected approvals, each decided on its own (its policy, its proposal's
    hash, its own transaction), with a line per approval saying what happened."""
    _check_reviewer(request.user)
    form = BulkForm(request.POST)
    if not form.is_valid():
        message = "; ".join(e for errors in form.errors.values() for e in errors)
        if not request.htmx:
            messages.error(request, message)
            return redirect("approvals:inbox")
        response = render(request, "approvals/_bulk_report.html", {"problem": message}, status=400)
        response[OUTCOME_HEADER] = "refused"
        return response
    approve = form.cleaned_data["decision"] == "approve"
    results = []
    for pk, digest in form.cleaned_data["selected"]:
        try:
            decided = decisions.decide(approval_id=pk, user=request.user, approved=approve,
                                       reason=form.cleaned_data["reason"], expected_hash=digest)
            results.append({"id": pk, "ok": True, "status": 200, "text": presenters.outcome_text(decided),
                            "approval": decided})
        except decisions.ApprovalError as exc:
            results.append({"id": pk, "ok": False, "status": exc.status_code, "text": _refusal_text(exc),
                            "approval": None})
    done = sum(1 for r in results if r["ok"])
    summary = f"{done} of {len(results)} {'approved' if approve else 'rejected'}"
    if not request.htmx:
        messages.success(request, summary) if done else messages.warning(request, summary)
        for r in results:
            if not r["ok"]:
                messages.warning(request, f"Approval {r['id']}: {r['text']}")
        return redirect("approvals:inbox")
    votes = inbox.vote_counts([r["id"] for r in results if r["ok"]])
    cards = [presenters.card_context(r["approval"], request.user, votes, gone=r["approval"].status != "pending")
             for r in results if r["ok"]]
    response = render(request, "approvals/_bulk_report.html",
                      {"results": results, "summary": summary, "cards": cards})
    response[OUTCOME_HEADER] = "decided"
    return response


# -- history ---------------------------------------------------------------------------------------------


@require_GET
@login_required
def history(request: HttpRequest) -> HttpResponse:
    _check_reviewer(request.user)
    form = HistoryFilterForm(request.GET)
    if not form.is_valid():
        template = "approvals/_history_results.html" if request.htmx else "approvals/history.html"
        return render(request, template, {"form": form, "invalid": True}, status=400)
    filters = form.cleaned_data
    approvals = (stats.decided(filters).select_related("run", "decided_by")
                 .defer("run__input", "run__output", "run__error").order_by("-decided_at", "-id"))
    paginator = Paginator(approvals, HISTORY_PAGE)
    page = paginator.get_page(filters.get("page") or 1)
    params = [(name, str(value)) for name, value in request.GET.items() if name != "page" and value]
    context = {
        "form": form,
        "page": page,
        "rows": [{"a": a, "outcome": presenters.outcome_text(a), "tone": presenters.status_tone(a.status),
                  "waited_s": (a.decided_at - a.created_at).total_seconds() if a.decided_at else None}
                 for a in page.object_list],
        "params": params,
        "latency": stats.time_to_decision(filters),
    }
    template = "approvals/_history_results.html" if request.htmx and not request.htmx.boosted else "approvals/history.html"
    return render(request, template, context)

