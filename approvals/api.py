"""The approvals part of the JSON API, mounted at /api/approvals on the run browser's NinjaAPI (same
authentication: a bearer token or the browser session with CSRF; 401 without either).

Every call needs approvals.decide_approval (reviewers). Decisions go through approvals.decisions,
like the inbox, the command line and admin, so the answers are the same: 400 bad input (a rejection
without a reason, edited arguments the tool's schema refuses, a decision on another proposal), 403
not allowed (group, four-eyes), 404 unknown approval, 409 already decided (saying who and how) or the
run already finished. A refused call changes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from approvals import decisions, inbox
from approvals.models import Approval

router = Router(tags=["approvals"])
MAX_PAGE = 200
AGES = tuple(inbox.AGES)


class Detail(Schema):
    detail: Any


ERRORS = {401: Detail, 403: Detail, 404: Detail}
DECISION_ERRORS = {**ERRORS, 400: Detail, 409: Detail}


class ApprovalOut(Schema):
    id: int
    run: int
    workflow: str
    seq: int = Field(description="the approval's position in the run's journal")
    tool: str
    arguments: Any
    arguments_hash: str = Field(description="pass back as expected_hash to decide on exactly this proposal")
    schema_: Any = Field(None, alias="schema", description="JSON schema edited arguments must satisfy")
    summary: str
    group: str
    escalated: bool
    policy: dict[str, Any]
    status: str
    votes: int = Field(description="approvals so far toward the policy's quorum")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    decided_at: dt.datetime | None
    decided_by: str | None
    decided_how: str
    reason: str
    final_arguments: Any
    edited: bool


class ApprovalPage(Schema):
    items: list[ApprovalOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class ApproveIn(Schema):
    arguments: Any = Field(None, description="edited arguments; omit (or null) to approve the proposal as is")
    comment: str = Field("", max_length=5000)
    expected_hash: str | None = Field(None, description="the arguments_hash the decision is about")


class RejectIn(Schema):
    reason: str = Field("", max_length=5000, description="required: it goes back to the agent")
    expected_hash: str | None = None


class CommentIn(Schema):
    text: str = Field(max_length=5000)


class CommentOut(Schema):
    id: int
    approval: int
    created_at: dt.datetime


def _reviewer(request: HttpRequest) -> Any:
    user = request.auth  # type: ignore[attr-defined]
    if not inbox.can_review(user):
        raise PermissionDenied("only reviewers (approvals.decide_approval) may read or decide approvals")
    return user


def _row(approval: Approval, votes: dict[int, int]) -> dict[str, Any]:
    return {
        "id": approval.pk,
        "run": approval.run_id,
        "workflow": approval.run.workflow,
        "seq": approval.seq,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "arguments_hash": approval.arguments_hash,
        "schema": approval.schema,
        "summary": approval.summary,
        "group": approval.group,
        "escalated": approval.escalated,
        "policy": approval.policy,
        "status": approval.status,
        "votes": votes.get(approval.pk, 0),
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
        "decided_by": approval.decided_by.get_username() if approval.decided_by_id and approval.decided_by else None,
        "decided_how": approval.decided_how,
        "reason": approval.reason,
        "final_arguments": approval.final_arguments,
        "edited": approval.edited,
    }


def _one(approval_id: int) -> dict[str, Any]:
    approval = decisions.get_approval(approval_id)
    return _row(approval, inbox.vote_counts([approval.pk]))


def _pk(approval_id: int) -> int:
    if not 0 < approval_id < 2**63:
        raise HttpError(404, f"no approval with id {approval_id}")
    return approval_id


def _call(action: Any, **kwargs: Any) -> Any:
    """Run a decision function; its error's status_code and message become the answer."""
    try:
        return action(**kwargs)
    except decisions.ApprovalError as exc:
        raise HttpError(exc.status_code, str(exc)) from None


@router.get("", response={200: ApprovalPage, 400: Detail, **ERRORS}, summary="Pending approvals for you",
            by_alias=True)
def list_approvals(
    request: HttpRequest,
    workflow: str | None = Query(None, max_length=200),
    tool: str | None = Query(None, max_length=200),
    run: int | None = Query(None, ge=1, le=2**63 - 1),
    age: str | None = Query(None, description=f"waiting at least: one of {', '.join(AGES)}"),
    sort: str = Query("desc", pattern="^(asc|desc)$", description="desc: newest first; asc: oldest first"),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=MAX_PAGE),
) -> dict[str, Any]:
    """The approvals the inbox shows you: pending, in your groups (every group for superusers),
    keyset-paged on (created_at, id)."""
    user = _reviewer(request)
    if age and age not in AGES:
        raise HttpError(400, f"age must be one of {', '.join(AGES)}")
    position = inbox.decode_cursor(cursor) if cursor else None
    if cursor and position is None:
        raise HttpError(400, "invalid cursor: pass back the next_cursor of a previous page")
    filters = inbox.Filters(workflow=workflow or "", tool=tool or "", age=age or "", run=run,
                            oldest_first=sort == "asc")
    page = inbox.page(user, filters, timezone.now(), cursor=position, limit=limit)
    votes = inbox.vote_counts([a.pk for a in page.items])
    return {"items": [_row(a, votes) for a in page.items], "next_cursor": page.next_cursor}


@router.get("/{approval_id}", response={200: ApprovalOut, **ERRORS}, summary="One approval, pending or decided",
            by_alias=True)
def get_approval(request: HttpRequest, approval_id: int) -> dict[str, Any]:
    _reviewer(request)
    return _call(_one, approval_id=_pk(approval_id))


@router.post("/{approval_id}/approve", response={200: ApprovalOut, **DECISION_ERRORS},
             summary="Approve, optionally with edited arguments", by_alias=True)
def approve(request: HttpRequest, approval_id: int, payload: ApproveIn) -> dict[str, Any]:
    """With a quorum, one approval counts a vote: the answer's status stays `pending` until enough
    reviewers agreed on the same arguments."""
    user = _reviewer(request)
    _call(decisions.decide, approval_id=_pk(approval_id), user=user, approved=True, reason=payload.comment,
          arguments=payload.arguments, expected_hash=payload.expected_hash)
    return _one(approval_id)


@router.post("/{approval_id}/reject", response={200: ApprovalOut, **DECISION_ERRORS},
             summary="Reject with a reason (it goes back to the agent)", by_alias=True)
def reject(request: HttpRequest, approval_id: int, payload: RejectIn) -> dict[str, Any]:
    user = _reviewer(request)
    _call(decisions.decide, approval_id=_pk(approval_id), user=user, approved=False, reason=payload.reason,
          expected_hash=payload.expected_hash)
    return _one(approval_id)


@router.post("/{approval_id}/comment", response={201: CommentOut, **DECISION_ERRORS},
             summary="Add a comment to the approval's audit trail")
def comment(request: HttpRequest, approval_id: int, payload: CommentIn) -> Status[dict[str, Any]]:
    user = _reviewer(request)
    record = _call(decisions.comment, approval_id=_pk(approval_id), user=user, text=payload.text)
    record.refresh_from_db(fields=["created_at"])
    return Status(201, {"id": record.pk, "approval": record.approval_id, "created_at": record.created_at})
