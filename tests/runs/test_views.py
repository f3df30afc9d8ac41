"""The run list: filters, search, keyset pages, counts; bad filters answer 400."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from durable.models import Run, Status
from tests.runs.ui import make_run

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

pytestmark = pytest.mark.django_db

LIST = "/runs/"


def ids_in(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="run-(\d+)"', html)]


def test_it_lists_runs_newest_first(client_for: Any) -> None:
    old = make_run(created_at=timezone.now() - dt.timedelta(hours=2))
    new = make_run(created_at=timezone.now() - dt.timedelta(hours=1))
    response = client_for("operator").get(LIST)
    assert response.status_code == 200
    assert ids_in(response.content.decode()) == [new.pk, old.pk]
    assert ids_in(client_for("operator").get(LIST, {"sort": "asc"}).content.decode()) == [old.pk, new.pk]


def test_it_filters_by_status_workflow_and_user(client_for: Any, users: Any) -> None:
    mine = make_run(status=Status.SUCCEEDED, workflow="a.one", started_by=users["runadmin"])
    failed = make_run(status=Status.FAILED, workflow="a.two")
    dead = make_run(status=Status.DEAD, workflow="a.two")
    waiting = make_run(status=Status.WAITING, workflow="a.one")
    client = client_for("operator")
    assert ids_in(client.get(LIST, {"status": "succeeded"}).content.decode()) == [mine.pk]
    assert set(ids_in(client.get(LIST, {"status": ["succeeded", "dead"]}).content.decode())) == {mine.pk, dead.pk}
    assert set(ids_in(client.get(LIST, {"workflow": "a.two"}).content.decode())) == {failed.pk, dead.pk}
    assert ids_in(client.get(LIST, {"started_by": "runadmin"}).content.decode()) == [mine.pk]
    assert set(ids_in(client.get(LIST, {"failed": "on"}).content.decode())) == {failed.pk, dead.pk}
    assert ids_in(client.get(LIST, {"waiting": "on"}).content.decode()) == [waiting.pk]


def test_it_filters_by_date_range(client_for: Any) -> None:
    today = timezone.now().replace(hour=12, minute=0)
    inside = make_run(created_at=today - dt.timedelta(days=1))
    make_run(created_at=today - dt.timedelta(days=5))
    make_run(created_at=today)
    day = (today - dt.timedelta(days=1)).date().isoformat()
    response = client_for("operator").get(LIST, {"created_from": day, "created_to": day})
    assert ids_in(response.content.decode()) == [inside.pk]


def test_it_searches_run_input_and_output(client_for: Any) -> None:
    by_input = make_run(input={"customer": "Zanzibar Trading", "n": 1})
    by_output = make_run(output={"summary": "refund for zanzibar approved"})
    make_run(input={"customer": "Elsewhere"}, output={"summary": "nothing"})
    response = client_for("operator").get(LIST, {"q": "zanzibar"})
    assert set(ids_in(response.content.decode())) == {by_input.pk, by_output.pk}


def next_link(html: str, rel: str) -> str:
    match = re.search(rf'rel="{rel}" href="\?([^"]+)"', html)
    return LIST + "?" + match.group(1).replace("&amp;", "&") if match else ""


def test_it_walks_every_run_once_with_keyset_pages(client_for: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("runs.listing.PAGE_SIZE", 5)
    # Many runs share one created_at (as db_default=Now() gives on SQLite, to the millisecond):
    # the id breaks the tie, so no run is skipped or shown twice.
    stamp = timezone.now().replace(microsecond=123000) - dt.timedelta(hours=1)
    for i in range(23):
        make_run(created_at=stamp if i % 3 else stamp - dt.timedelta(seconds=i), events=False)
    if connection.vendor == "sqlite":
        # SQLite keeps datetimes as text: db_default=Now() writes "…:05.123", Django "…:05.123000".
        # Mix both spellings of the same instant.
        spelled = stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        with connection.cursor() as cursor:
            cursor.execute("UPDATE durable_run SET created_at = %s WHERE id % 2 = 0 AND created_at LIKE %s",
                           [spelled, spelled + "%"])
            assert cursor.rowcount > 3
    expected = list(Run.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    client = client_for("operator")
    seen: list[int] = []
    url = LIST
    while url:
        html = client.get(url).content.decode()
        seen += ids_in(html)
        url = next_link(html, "next")
    assert seen == expected
    # and back again from the last page with the "newer" links
    pages = [ids_in(html)]
    url = next_link(html, "prev")
    while url:
        html = client.get(url).content.decode()
        pages.insert(0, ids_in(html))
        url = next_link(html, "prev")
    assert [pk for page in pages for pk in page] == expected


def test_it_walks_back_to_the_first_page_with_the_newer_link(client_for: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("runs.listing.PAGE_SIZE", 3)
    for i in range(7):
        make_run(created_at=timezone.now() - dt.timedelta(minutes=i), events=False)
    order = list(Run.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    client = client_for("operator")
    first = client.get(LIST).content.decode()
    second = client.get(next_link(first, "next")).content.decode()
    assert ids_in(second) == order[3:6]
    back = client.get(next_link(second, "prev")).content.decode()
    assert ids_in(back) == order[:3]
    assert 'rel="prev"' not in back  # the first page again: nothing newer


def test_it_pages_without_offset_and_counts_in_one_group_by(client_for: Any) -> None:
    for status in (Status.RUNNING, Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED):
        make_run(status=status, events=False)
    client = client_for("operator")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST)
    assert response.status_code == 200
    sql = [q["sql"].upper() for q in queries.captured_queries if "DURABLE_RUN" in q["sql"].upper()]
    assert not any("OFFSET" in s for s in sql)
    assert sum("GROUP BY" in s for s in sql) == 1
    assert sum("COUNT(" in s for s in sql) == 1
    html = response.content.decode()
    assert re.search(r'data-status="succeeded">\s*succeeded <span class="n">2</span>', html)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"created_from": "yesterday"}, "Enter a valid date"),
        ({"status": "exploded"}, "Select a valid choice"),
        ({"after": "not-a-cursor"}, "Not a page position"),
        ({"after": "2026-01-01T00:00:00~99999999999999999999999"}, "Not a page position"),
        ({"started_by": "nobody-by-that-name"}, "No user named"),
        ({"q": "x" * 500}, "at most 200 characters"),
        ({"created_from": "2026-02-01", "created_to": "2026-01-01"}, "before the start date"),
    ],
)
def test_it_answers_400_with_a_message_for_a_bad_filter(client_for: Any, params: dict[str, str], message: str) -> None:
    response = client_for("operator").get(LIST, params)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_it_answers_an_htmx_filter_with_the_results_fragment(client_for: Any) -> None:
    run = make_run()
    response = client_for("operator").get(LIST, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and f'id="run-{run.pk}"' in html
    bad = client_for("operator").get(LIST, {"status": "nope"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and "<html" not in bad.content.decode()


def test_it_connects_the_list_socket_with_the_page_filters(client_for: Any) -> None:
    html = client_for("operator").get(LIST, {"workflow": "demo.analysis", "status": "running"}).content.decode()
    socket = re.search(r'ws-connect="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert socket.startswith("/ws/runs/?")
    assert "workflow=demo.analysis" in socket and "status=running" in socket and "live_new=1" in socket


def test_it_shows_start_run_only_to_controllers(client_for: Any) -> None:
    start = reverse("runs:start")
    assert start not in client_for("operator").get(LIST).content.decode()
    assert start in client_for("runadmin").get(LIST).content.decode()


def test_it_shows_the_approvals_link_only_to_reviewers(client_for: Any) -> None:
    assert "Approvals" not in client_for("operator").get(LIST).content.decode()
    assert "Approvals" in client_for("reviewer").get(LIST).content.decode()
    assert ">Admin<" in client_for("staff").get(LIST).content.decode()
    assert ">Admin<" not in client_for("runadmin").get(LIST).content.decode()


def test_it_searches_with_the_gin_index_on_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the full-text index is PostgreSQL's")
    from runs.listing import apply_search

    queryset = apply_search(Run.objects.order_by("-created_at", "-id"), "refund")[:51]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # an empty table: make the planner show its choice
        sql, params = queryset.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "run_search_gin" in plan, plan
