"""Forms of the run browser: the list filters (also parsed by the list websocket) and the start form."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from durable import journal, registry
from durable.models import Status

SEARCH_MAX = 200


@dataclass(frozen=True)
class Cursor:
    """A keyset position: the (created_at, id) of a row, rendered as `<timestamp>~<id>`.

    `stamp` is the timestamp exactly as the database compares it: ISO text for PostgreSQL (parsed
    back into a datetime), and on SQLite the stored text itself, because SQLite orders datetimes as
    text and one instant can be stored in two spellings ("…:05.120" from Now(), "…:05.120000" from
    Django), which compare unequal there.
    """

    stamp: str
    id: int

    def __str__(self) -> str:
        return f"{self.stamp}~{self.id}"

    @property
    def created_at(self) -> dt.datetime:
        created = dt.datetime.fromisoformat(self.stamp)
        return created if created.tzinfo else created.replace(tzinfo=dt.UTC)

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        stamp, sep, pk = raw.rpartition("~")
        if not sep or not pk.isdigit() or len(pk) > 18 or len(stamp) > 40:
            raise ValueError(raw)
        cursor = cls(stamp, int(pk))
        cursor.created_at  # noqa: B018 - validates the timestamp
        return cursor


class CursorField(forms.CharField):
    default_error_messages: ClassVar[dict[str, str]] = {"invalid": "Not a page position from this list."}

    def to_python(self, value: Any) -> Cursor | None:
        value = super().to_python(value)
        if not value:
            return None
        if len(value) > 80:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            return Cursor.parse(value)
        except (ValueError, OverflowError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


class RunFilterForm(forms.Form):
    """Every field is optional; a bad value is a form error (the view answers 400), never a 500."""

    q = forms.CharField(required=False, max_length=SEARCH_MAX, label="Search input and output")
    status = forms.MultipleChoiceField(required=False, choices=Status.choices)
    workflow = forms.CharField(required=False, max_length=200)
    started_by = forms.CharField(required=False, max_length=150, label="Started by (username)")
    created_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    failed = forms.BooleanField(required=False, label="Failed or dead")
    waiting = forms.BooleanField(required=False, label="Waiting or needs a person")
    sort = forms.ChoiceField(
        required=False, choices=[("desc", "Newest first"), ("asc", "Oldest first")], initial="desc"
    )
    after = CursorField(required=False, widget=forms.HiddenInput)
    before = CursorField(required=False, widget=forms.HiddenInput)

    def clean_q(self) -> str:
        return " ".join(self.cleaned_data["q"].split())

    def clean_started_by(self) -> Any:
        username = self.cleaned_data["started_by"].strip()
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).only("pk", "username").first()
        if user is None:
            raise forms.ValidationError(f"No user named {username!r}.")
        return user

    def clean_sort(self) -> str:
        return self.cleaned_data["sort"] or "desc"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        if data.get("after") and data.get("before"):
            raise forms.ValidationError("Use either a next-page or a previous-page position, not both.")
        return data

    # -- for links and the live socket -----------------------------------------------------------------
    def filter_params(self) -> list[tuple[str, str]]:
        """The filters (not the page position) as query parameters, in a stable order."""
        data = self.cleaned_data
        params: list[tuple[str, str]] = []
        if data.get("q"):
            params.append(("q", data["q"]))
        for value in data.get("status") or []:
            params.append(("status", value))
        if data.get("workflow"):
            params.append(("workflow", data["workflow"]))
        if data.get("started_by"):
            params.append(("started_by", data["started_by"].get_username()))
        for name in ("created_from", "created_to"):
            if data.get(name):
                params.append((name, data[name].isoformat()))
        for name in ("failed", "waiting"):
            if data.get(name):
                params.append((name, "on"))
        if data.get("sort") == "asc":
            params.append(("sort", "asc"))
        return params

    def date_bounds(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The date range as [start, end) datetimes in the current time zone."""
        tz = timezone.get_current_timezone()
        start, end = self.cleaned_data.get("created_from"), self.cleaned_data.get("created_to")
        lower = dt.datetime.combine(start, dt.time.min, tzinfo=tz) if start else None
        upper = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=tz) if end else None
        return lower, upper


def workflow_choices() -> list[tuple[str, str]]:
    return [(w.name, f"{w.name} (v{w.version})") for w in registry.all_workflows()]


class StartRunForm(forms.Form):
    workflow = forms.ChoiceField(
        choices=(),
        error_messages={"invalid_choice": "Unknown workflow %(value)r: pick one of the registered workflows."},
    )
    input = forms.CharField(
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "mono"}),
        help_text="JSON; an empty field means {}.",
    )
    idempotency_key = forms.CharField(
        required=False,
        max_length=255,
        help_text="Optional. Starting again with the same key and input returns the first run.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workflow"].choices = workflow_choices()

    def clean_input(self) -> Any:
        from durable.errors import DurableError
        from durable.payloads import parse_json

        text = self.cleaned_data["input"].strip() or "{}"
        if len(text.encode()) > journal.max_payload():
            raise forms.ValidationError(
                f"The input is {len(text.encode()):,} bytes, over the limit of {journal.max_payload():,} bytes."
            )
        try:
            return parse_json(text, "the input")
        except DurableError as exc:
            raise forms.ValidationError(_capitalise(str(exc)) + ".") from None

    def clean_idempotency_key(self) -> str | None:
        return self.cleaned_data["idempotency_key"].strip() or None


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class ResolveForm(forms.Form):
    """A person's answer for an at-most-once step cut off before its outcome was recorded."""

    seq = forms.IntegerField(min_value=0)
    happened = forms.ChoiceField(choices=(("yes", "It happened"), ("no", "It did not happen")))
    output = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
                             help_text="If it happened: its result as JSON (optional).")

    def clean_output(self) -> Any:
        from durable.errors import DurableError
        from durable.payloads import parse_json

        text = self.cleaned_data["output"].strip()
        if not text:
            return None
        try:
            return parse_json(text, "the output")
        except DurableError as exc:
            raise forms.ValidationError(_capitalise(str(exc)) + ".") from None
