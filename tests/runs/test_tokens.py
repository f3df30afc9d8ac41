"""API tokens: the tokens page (create once-shown, list, revoke) and Django admin."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from runs.models import ApiToken, hash_token

pytest_plugins = ["tests.runs.api_support"]
pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"dur_[A-Za-z0-9_-]{20,}")


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_sends_anonymous_users_to_the_login_page() -> None:
    response = Client().get(reverse("tokens:list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_creates_a_token_and_shows_it_once(cast: Any) -> None:
    client = logged_in(cast["operator"])
    response = client.post(reverse("tokens:list"), {"name": "CI pipeline"})
    assert response.status_code == 200
    raw = TOKEN.search(response.content.decode()).group(0)
    token = ApiToken.objects.get(user=cast["operator"])
    assert token.name == "CI pipeline" and token.key_hash == hash_token(raw) and raw.startswith(token.prefix)
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    again = client.get(reverse("tokens:list")).content.decode()
    assert raw not in again and token.prefix in again and "CI pipeline" in again
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/runs")
    assert api.status_code == 200


def test_it_never_stores_the_raw_token(cast: Any) -> None:
    response = logged_in(cast["operator"]).post(reverse("tokens:list"), {"name": "laptop"})
    raw = TOKEN.search(response.content.decode()).group(0)
    stored = ApiToken.objects.values().get()
    assert all(raw not in str(value) for value in stored.values())


def test_it_refuses_a_blank_name(cast: Any) -> None:
    response = logged_in(cast["operator"]).post(reverse("tokens:list"), {"name": "   "})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_it_lists_only_the_users_own_tokens(cast: Any) -> None:
    ApiToken.objects.create_token(cast["operator"], "mine")
    ApiToken.objects.create_token(cast["runadmin"], "someone else's")
    page = logged_in(cast["operator"]).get(reverse("tokens:list")).content.decode()
    assert "mine" in page and "someone else" not in page


def test_it_revokes_a_token_so_the_api_refuses_it(cast: Any) -> None:
    token, raw = ApiToken.objects.create_token(cast["operator"], "old")
    client = logged_in(cast["operator"])
    response = client.post(reverse("tokens:revoke", args=[token.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("tokens:list")
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/runs").status_code == 401
    assert "revoked" in client.get(reverse("tokens:list")).content.decode()


def test_it_does_not_revoke_another_users_token(cast: Any) -> None:
    token, _ = ApiToken.objects.create_token(cast["runadmin"], "theirs")
    response = logged_in(cast["operator"]).post(reverse("tokens:revoke", args=[token.pk]))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_it_revokes_only_by_post(cast: Any) -> None:
    token, _ = ApiToken.objects.create_token(cast["operator"], "t")
    assert logged_in(cast["operator"]).get(reverse("tokens:revoke", args=[token.pk])).status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


def test_it_needs_csrf_to_create_a_token(cast: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["operator"])
    assert client.post(reverse("tokens:list"), {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


# -- admin ------------------------------------------------------------------------------------


def test_admin_lists_tokens_without_their_hash(cast: Any) -> None:
    token, _ = ApiToken.objects.create_token(cast["operator"], "listed")
    client = logged_in(cast["staff"])
    changelist = client.get(reverse("admin:runs_apitoken_changelist")).content.decode()
    assert token.prefix in changelist and "operator" in changelist
    change = client.get(reverse("admin:runs_apitoken_change", args=[token.pk])).content.decode()
    assert token.key_hash not in changelist and token.key_hash not in change


def test_admin_creates_a_token_and_shows_it_once_in_a_message(cast: Any) -> None:
    client = logged_in(cast["staff"])
    response = client.post(
        reverse("admin:runs_apitoken_add"), {"user": cast["operator"].pk, "name": "from admin"}
    )
    assert response.status_code == 302
    token = ApiToken.objects.get(name="from admin")
    shown = " ".join(str(m) for m in get_messages(response.wsgi_request))
    raw = TOKEN.search(shown).group(0)
    assert token.key_hash == hash_token(raw) and token.user == cast["operator"]
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/runs").status_code == 200


def test_admin_revoke_action(cast: Any) -> None:
    first, _ = ApiToken.objects.create_token(cast["operator"], "a")
    second, _ = ApiToken.objects.create_token(cast["runadmin"], "b")
    response = logged_in(cast["staff"]).post(
        reverse("admin:runs_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [first.pk, second.pk]},
    )
    assert response.status_code == 302
    assert ApiToken.objects.filter(revoked_at=None).count() == 0


def test_admin_is_for_staff_only(cast: Any) -> None:
    response = logged_in(cast["runadmin"]).get(reverse("admin:runs_apitoken_changelist"))
    assert response.status_code == 302  # to the admin login
