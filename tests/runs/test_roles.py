"""The role matrix: every route of the run browser (HTTP and websocket) for every role.

The route list is read from the URLconf and the websocket routing, so a new route without a row
here fails test_it_has_a_row_for_every_route.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, reverse

from approvals import urls as approval_urls
from durable.models import Status
from runs import routing, site_urls, urls
from tests.runs.ui import ROLES, make_run

pytest_plugins = ["tests.runs.ui"]  # fixtures: users, client_for; ends stray PostgreSQL sessions

OK, REDIRECT, FORBIDDEN = 200, 302, 403
LOGIN = "login"  # anonymous users are redirected to the login page
ACCEPT, DENY = "accept", 4403

VIEWERS = {"anonymous": LOGIN, "nobody": FORBIDDEN, "operator": OK, "reviewer": OK, "runadmin": OK, "staff": OK}
CONTROLLERS = {"anonymous": LOGIN, "nobody": FORBIDDEN, "operator": FORBIDDEN, "reviewer": FORBIDDEN,
               "runadmin": REDIRECT, "staff": REDIRECT}
SOCKETS = {"anonymous": DENY, "nobody": DENY, "operator": ACCEPT, "reviewer": ACCEPT, "runadmin": ACCEPT, "staff": ACCEPT}
BAD = 400  # allowed in, but the empty POST of this matrix is not a valid request
REVIEWERS = {"anonymous": LOGIN, "nobody": FORBIDDEN, "operator": FORBIDDEN, "reviewer": OK, "runadmin": FORBIDDEN,
             "staff": OK}
REVIEWER_SOCKETS = {"anonymous": DENY, "nobody": DENY, "operator": DENY, "reviewer": ACCEPT, "runadmin": DENY,
                    "staff": ACCEPT}

# route name -> (method, needs (run, step), expected per role)
HTTP_MATRIX: dict[str, tuple[str, str, dict[str, Any]]] = {
    "home": ("get", "", {role: REDIRECT for role in ROLES}),
    "login": ("get", "", {"anonymous": OK, **{role: REDIRECT for role in ROLES[1:]}}),
    "logout": ("post", "", {role: REDIRECT for role in ROLES}),
    "runs:list": ("get", "", VIEWERS),
    "runs:start": ("get", "", CONTROLLERS | {"runadmin": OK, "staff": OK}),
    "runs:detail": ("get", "run", VIEWERS),
    "runs:step": ("get", "step", VIEWERS),
    "runs:steps": ("get", "run", VIEWERS),
    "runs:events": ("get", "run", VIEWERS),
    "runs:pause": ("post", "run", CONTROLLERS),
    "runs:resume": ("post", "run", CONTROLLERS),
    "runs:cancel": ("post", "run", CONTROLLERS),
    "runs:retry": ("post", "run", CONTROLLERS),
    "runs:resolve": ("post", "run", CONTROLLERS | {"runadmin": BAD, "staff": BAD}),
    "approvals:inbox": ("get", "", REVIEWERS),
    "approvals:history": ("get", "", REVIEWERS),
    "approvals:detail": ("get", "approval", REVIEWERS),
    "approvals:decide": ("post", "approval", REVIEWERS | {"reviewer": BAD, "staff": BAD}),
    "approvals:preview": ("post", "approval", REVIEWERS),
    "approvals:comment": ("post", "approval", REVIEWERS | {"reviewer": BAD, "staff": BAD}),
    "approvals:bulk": ("post", "", REVIEWERS | {"reviewer": REDIRECT, "staff": REDIRECT}),
}
WS_MATRIX: dict[str, tuple[str, dict[str, Any]]] = {
    "ws-runs": ("/ws/runs/", SOCKETS),
    "ws-run": ("/ws/runs/{run}/", SOCKETS),
    "ws-approvals": ("/ws/approvals/", REVIEWER_SOCKETS),
}


def http_routes() -> set[str]:
    names = {p.name for p in site_urls.urlpatterns if isinstance(p, URLPattern)}
    names |= {f"{urls.app_name}:{p.name}" for p in urls.urlpatterns if isinstance(p, URLPattern)}
    names |= {f"{approval_urls.app_name}:{p.name}" for p in approval_urls.urlpatterns if isinstance(p, URLPattern)}
    return names


def test_it_has_a_row_for_every_route() -> None:
    assert set(HTTP_MATRIX) == http_routes()
    assert set(WS_MATRIX) == {route.name for route in routing.websocket_urlpatterns}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(HTTP_MATRIX))
def test_it_answers_each_role_as_the_matrix_says(name: str, role: str, client_for: Any) -> None:
    method, needs, expected = HTTP_MATRIX[name]
    run = make_run(steps=1, status=Status.QUEUED)
    kwargs = {"run_id": run.pk, "seq": 0} if needs == "step" else {"run_id": run.pk} if needs == "run" else {}
    if needs == "approval":
        from approvals import decisions

        kwargs = {"approval_id": decisions.request(run_id=run.pk, seq=1, tool="refund", arguments={"amount": 1}).pk}
    url = reverse(name, kwargs=kwargs) + ("?before=1" if name == "runs:steps" else "")
    response = getattr(client_for(role), method)(url)
    if expected[role] == LOGIN:
        assert response.status_code == REDIRECT
        assert response["Location"].startswith(reverse("login"))
    else:
        assert response.status_code == expected[role], (name, role, response.status_code)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(WS_MATRIX))
async def test_it_accepts_sockets_for_each_role_as_the_matrix_says(name: str, users: Any) -> None:
    # All roles in one test: each transactional test costs a database flush.
    from channels.db import database_sync_to_async
    from django.contrib.auth.models import AnonymousUser

    path, expected = WS_MATRIX[name]
    run = await database_sync_to_async(make_run)(steps=1)
    for role in ROLES:
        communicator = WebsocketCommunicator(URLRouter(routing.websocket_urlpatterns), path.format(run=run.pk))
        communicator.scope["user"] = users[role] or AnonymousUser()
        connected, _ = await communicator.connect()
        assert connected, role  # always accepted first (T15), then closed when denied
        if expected[role] == DENY:
            message = await communicator.receive_output(timeout=2)
            assert message == {"type": "websocket.close", "code": 4403}, role
        else:
            # accepted: either quiet (the list) or sending the run's events (the detail)
            if not await communicator.receive_nothing(timeout=0.3):
                message = await communicator.receive_output()
                assert message["type"] == "websocket.send", (role, message)
        await communicator.disconnect()
