"""The run list query: filters, text search, keyset pagination and the per-status counts.

Shared by the list view and the list websocket, so that a live update applies exactly the filters
the page shows. Queries are shaped for 100,000+ runs: one indexed range scan per page on
`run_created_desc` (-created_at, -id), never OFFSET, and one GROUP BY for the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import CharField, Count, F, Q, QuerySet, TextField, Value
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.db.models.functions import Cast

from durable.models import Run, Status
from runs.forms import Cursor, RunFilterForm
from runs.presenters import statuses

PAGE_SIZE = 50
FAILED_STATUSES = statuses("FAILED", "DEAD")
# Waiting on something (timer, event, child run, approval) or stopped until a person acts.
WAITING_STATUSES = statuses("WAITING", "WAITING_APPROVAL", "DEFINITION_CHANGED", "OUTCOME_UNKNOWN", "ATTENTION")
LIST_FIELDS = (
    "id", "workflow", "workflow_version", "status", "next_seq", "created_at", "started_at", "finished_at",
    "updated_at", "recoveries", "parent_id", "started_by__username",
)


def search_vector() -> SearchVector:
    """Must stay identical to the expression of the GIN index `run_search_gin`
    (durable/migrations/0003_run_search_index.py): PostgreSQL only uses the index for that exact
    expression. 'simple' configuration: JSON holds identifiers and data, not English prose."""
    return SearchVector(Cast("input", TextField()), Cast("output", TextField()), config=Value("simple"))


def apply_search(queryset: QuerySet[Run], text: str) -> QuerySet[Run]:
    if not text:
        return queryset
    if connection.vendor == "postgresql":
        query = SearchQuery(text, search_type="websearch", config=Value("simple"))
        return queryset.alias(search=search_vector()).filter(search=query)
    # SQLite: a scan of the JSON text; fine for the embedded single-machine setup.
    return queryset.alias(
        input_text=Cast("input", TextField()), output_text=Cast("output", TextField())
    ).filter(Q(input_text__icontains=text) | Q(output_text__icontains=text))


def base_queryset(form: RunFilterForm) -> QuerySet[Run]:
    """All filters except the status ones: the counts bar counts over this."""
    data = form.cleaned_data
    queryset = Run.objects.all()
    if data.get("workflow"):
        queryset = queryset.filter(workflow=data["workflow"])
    if data.get("started_by"):
        queryset = queryset.filter(started_by=data["started_by"])
    lower, upper = form.date_bounds()
    if lower:
        queryset = queryset.filter(created_at__gte=lower)
    if upper:
        queryset = queryset.filter(created_at__lt=upper)
    return apply_search(queryset, data.get("q") or "")


def apply_status_filters(queryset: QuerySet[Run], form: RunFilterForm) -> QuerySet[Run]:
    data = form.cleaned_data
    if data.get("failed"):
        queryset = queryset.filter(status__in=FAILED_STATUSES)
    if data.get("waiting"):
        queryset = queryset.filter(status__in=WAITING_STATUSES)
    if data.get("status"):
        queryset = queryset.filter(status__in=data["status"])
    return queryset


def filtered_runs(form: RunFilterForm) -> QuerySet[Run]:
    return apply_status_filters(base_queryset(form), form)


def status_counts(form: RunFilterForm) -> dict[str, int]:
    """Runs per status under the current non-status filters: one GROUP BY."""
    rows = base_queryset(form).order_by().values("status").annotate(n=Count("id"))
    counts = {status: 0 for status in Status.values}
    for row in rows:
        counts[row["status"]] = row["n"]
    return counts


# -- keyset pagination -------------------------------------------------------------------------------
def keyset(queryset: QuerySet[Run], cursor: Cursor, *, older: bool) -> QuerySet[Run]:
    """Rows strictly before (older=True) or after the cursor in (created_at, id) order."""
    if connection.vendor != "sqlite":
        # A row comparison, which PostgreSQL answers from the (created_at, id) index.
        key = Tuple(F("created_at"), F("id"))
        lookup = TupleLessThan if older else TupleGreaterThan
        return queryset.filter(lookup(key, (cursor.created_at, cursor.id)))
    # SQLite compares the stored text, exactly as its ORDER BY does (see Cursor).
    stamp = Value(cursor.stamp, output_field=CharField())
    if older:
        return queryset.filter(Q(created_at__lt=stamp) | Q(created_at=stamp, id__lt=cursor.id))
    return queryset.filter(Q(created_at__gt=stamp) | Q(created_at=stamp, id__gt=cursor.id))


def with_stamp(queryset: QuerySet[Run]) -> QuerySet[Run]:
    """On SQLite, also fetch created_at as stored (text), for the cursors of the page."""
    if connection.vendor == "sqlite":
        return queryset.annotate(created_stamp=Cast("created_at", CharField()))
    return queryset


@dataclass
class Page:
    runs: list[Run]
    newer: Cursor | None = None  # link to the page before this one in display order
    older: Cursor | None = None  # link to the page after this one in display order
    is_first: bool = True
    filters: list[tuple[str, str]] = field(default_factory=list)


def cursor_of(run: Run) -> Cursor:
    stamp = getattr(run, "created_stamp", None) or run.created_at.isoformat()
    return Cursor(stamp, run.pk)


def page_of_runs(form: RunFilterForm, *, size: int | None = None) -> Page:
    size = size or PAGE_SIZE
    data = form.cleaned_data
    ascending = data.get("sort") == "asc"
    queryset = with_stamp(filtered_runs(form).select_related("started_by").only(*LIST_FIELDS))
    forward = ("created_at", "id") if ascending else ("-created_at", "-id")
    backward = ("-created_at", "-id") if ascending else ("created_at", "id")
    after, before = data.get("after"), data.get("before")
    if before is not None:
        # The previous page: walk the other way from the cursor, then flip back to display order.
        rows = list(keyset(queryset, before, older=ascending).order_by(*backward)[: size + 1])
        more = len(rows) > size
        runs = list(reversed(rows[:size]))
        page = Page(runs, is_first=not more)
        page.newer = cursor_of(runs[0]) if runs and more else None
        page.older = cursor_of(runs[-1]) if runs else before
    else:
        if after is not None:
            queryset = keyset(queryset, after, older=not ascending)
        rows = list(queryset.order_by(*forward)[: size + 1])
        runs = rows[:size]
        page = Page(runs, is_first=after is None)
        page.newer = cursor_of(runs[0]) if runs and after is not None else (after if after else None)
        page.older = cursor_of(runs[-1]) if len(rows) > size else None
    page.filters = form.filter_params()
    return page
