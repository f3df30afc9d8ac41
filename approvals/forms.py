"""Forms of the approval inbox: filters, a decision, a comment, a bulk decision, history filters.

Forms only check shape (required fields, JSON syntax, sizes). Whether a decision is allowed, and
whether edited arguments satisfy the tool's schema, is decided by approvals.decisions.decide, the one
function every path goes through.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from approvals.inbox import AGES, Filters
from approvals.models import ApprovalStatus

MAX_ARGUMENTS_CHARS = 200_000
MAX_REASON_CHARS = 5_000
MAX_BULK = 200


class InboxFilterForm(forms.Form):
    workflow = forms.CharField(required=False, max_length=200)
    tool = forms.CharField(required=False, max_length=200)
    age = forms.ChoiceField(
        required=False,
        choices=[("", "Any age"), ("5m", "Waiting 5 min or more"), ("1h", "Waiting 1 hour or more"),
                 ("1d", "Waiting 1 day or more")],
    )
    run = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    sort = forms.ChoiceField(required=False, choices=[("", "Newest first"), ("desc", "Newest first"),
                                                      ("asc", "Oldest first")])

    def filters(self) -> Filters:
        data = self.cleaned_data
        return Filters(
            workflow=data.get("workflow", "").strip(),
            tool=data.get("tool", "").strip(),
            age=data.get("age", "") if data.get("age", "") in AGES else "",
            run=data.get("run"),
            oldest_first=data.get("sort") == "asc",
        )


def parse_arguments(text: str) -> Any:
    """The edited arguments as JSON; ValidationError with the line and column of a syntax error."""
    if len(text) > MAX_ARGUMENTS_CHARS:
        raise forms.ValidationError(f"the arguments are over {MAX_ARGUMENTS_CHARS:,} characters")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


class DecisionForm(forms.Form):
    """Approve (optionally with edited arguments) or reject (with a reason). `expected_hash` is the
    arguments_hash of the proposal the reviewer saw: a decision on another proposal is refused."""

    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=MAX_REASON_CHARS, strip=True)
    arguments = forms.CharField(required=False, strip=True)
    expected_hash = forms.RegexField(regex=r"^[0-9a-f]{64}$", error_messages={
        "required": "the proposal's hash is missing: reload the approval and decide again",
        "invalid": "the proposal's hash is malformed: reload the approval and decide again",
    })
    view = forms.ChoiceField(required=False, choices=[("", ""), ("card", "card"), ("detail", "detail")])

    def clean_arguments(self) -> Any:
        text = self.cleaned_data.get("arguments", "")
        return parse_arguments(text) if text else None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("decision") == "reject" and not data.get("reason"):
            self.add_error("reason", "a rejection needs a reason: it goes back to the agent")
        if data.get("decision") == "reject" and data.get("arguments") is not None:
            data["arguments"] = None  # edits only matter to an approval
        return data


class PreviewForm(forms.Form):
    arguments = forms.CharField(required=False, strip=True)


class CommentForm(forms.Form):
    text = forms.CharField(max_length=MAX_REASON_CHARS, strip=True, error_messages={
        "required": "write a comment first",
    })


class BulkForm(forms.Form):
    """Selected approvals as "<id>:<arguments_hash>", so each is decided on the proposal shown."""

    selected = forms.MultipleChoiceField(error_messages={"required": "select at least one approval"})
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=MAX_REASON_CHARS, strip=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any value is a choice; clean_selected checks the shape.
        self.fields["selected"].valid_value = lambda value: True  # type: ignore[attr-defined]

    def clean_selected(self) -> list[tuple[int, str]]:
        pairs = []
        for value in self.cleaned_data["selected"][: MAX_BULK + 1]:
            pk, _, digest = str(value).partition(":")
            if not pk.isdigit() or len(pk) > 18 or len(digest) != 64:
                raise forms.ValidationError(f"{value[:40]!r} is not an approval of this inbox")
            pairs.append((int(pk), digest))
        if len(pairs) > MAX_BULK:
            raise forms.ValidationError(f"decide at most {MAX_BULK} approvals at once")
        return list(dict.fromkeys(pairs))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("decision") == "reject" and not data.get("reason"):
            self.add_error("reason", "a rejection needs a reason: it goes back to each agent")
        return data


class HistoryFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any decision")] + [
        (s.value, s.label) for s in ApprovalStatus if s != ApprovalStatus.PENDING
    ])
    tool = forms.CharField(required=False, max_length=200)
    reviewer = forms.CharField(required=False, max_length=150)
    decided_from = forms.DateField(required=False)
    decided_to = forms.DateField(required=False)
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)
