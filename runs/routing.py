"""Websocket routes. tests/runs/test_roles.py fails if a route here has no row in its role matrix."""

from django.urls import path

from approvals.consumers import InboxConsumer
from runs import consumers

websocket_urlpatterns = [
    path("ws/runs/", consumers.RunListConsumer.as_asgi(), name="ws-runs"),
    path("ws/runs/<int:run_id>/", consumers.RunConsumer.as_asgi(), name="ws-run"),
    path("ws/approvals/", InboxConsumer.as_asgi(), name="ws-approvals"),
]
