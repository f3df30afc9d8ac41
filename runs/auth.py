"""Authentication of JSON API requests: per-user bearer tokens, or the browser's session.

A request carrying an Authorization header is judged by that header alone: a wrong or revoked token
is a 401 even when a session cookie rides along. Session requests with unsafe methods must pass
Django's CSRF check (the X-CSRFToken header), exactly like a form post; token requests need none,
since a browser never attaches a bearer token on its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from runs.models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
# last_used_at is written at most once per interval, so reads stay reads.
LAST_USED_INTERVAL = timedelta(minutes=1)


class BearerToken(HttpBearer):
    """`Authorization: Bearer dur_...`: a token created on the tokens page or in admin."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_token = ApiToken.objects.authenticate(token.strip())
        if api_token is None or not api_token.user.is_active:
            return None
        if api_token.last_used_at is None or timezone.now() - api_token.last_used_at > LAST_USED_INTERVAL:
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=Now())
        request.user = api_token.user
        return api_token.user


class SessionCookie(APIKeyCookie):
    """The logged-in browser session; CSRF-checked on unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        # The CSRF check happens in authenticate, only for a logged-in session: an anonymous request
        # gets its 401, not a CSRF 403.
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if "authorization" in request.headers:
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        unsafe = request.method not in SAFE_METHODS and not getattr(request, "_ninja_csrf_exempt", False)
        if unsafe and check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header")
        return user


api_auth = [BearerToken(), SessionCookie()]
