"""The API tokens page: a logged-in user creates, lists and revokes their own tokens.

Only a hash is stored, so a new token is shown once, in the response to the POST that created it
(never put in the session or a message cookie). Mounted at /tokens/ by config/urls.py.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from runs.models import ApiToken

app_name = "tokens"


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. 'CI pipeline' or 'my laptop'."
    )

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the token a name.")
        return name


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    new_token = None
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, new_token = ApiToken.objects.create_token(request.user, form.cleaned_data["name"])
        form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at", "-id")
    context = {"form": form, "tokens": tokens, "new_token": new_token}
    status = 400 if request.method == "POST" and new_token is None else 200
    return render(request, "runs/tokens.html", context, status=status)


@login_required
@require_POST
def revoke(request: HttpRequest, pk: int) -> HttpResponse:
    # Another user's token is a 404, like a token that does not exist.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if ApiToken.objects.filter(pk=token.pk).revoke():
        messages.success(request, f"Token “{token.name}” ({token.prefix}…) revoked.")
    return redirect("tokens:list")


urlpatterns = [
    path("", token_list, name="list"),
    path("<int:pk>/revoke/", revoke, name="revoke"),
]
