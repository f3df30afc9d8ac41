"""Notifications of approval requests: the email with its signed link, and the HMAC-signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from django.core import mail
from django.urls import reverse
from django_q.models import OrmQ

from approvals import notify
from approvals.models import AuditRecord
from tests.approvals.inbox_support import logged_in, make_approval

pytest_plugins = ["tests.runs.ui"]  # ends stray PostgreSQL sessions before the test database is dropped

pytestmark = pytest.mark.django_db


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"body": body, "headers": dict(self.headers), "path": self.path})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server that records the POSTs it gets."""
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/approvals", received
    finally:
        server.shutdown()
        server.server_close()


def test_it_enqueues_a_notification_with_the_request(people: Any) -> None:
    approval = make_approval()
    queued = [(q.task["func"], q.task["args"], q.task.get("name")) for q in OrmQ.objects.all()]
    assert ("approvals.notify.send", (approval.pk, "requested"), f"approval-{approval.pk}-requested") in queued


def test_it_emails_the_deciding_group_a_signed_link_that_opens_the_approval(people: Any, settings: Any) -> None:
    settings.DURABLE_BASE_URL = "https://durable.example.com"
    settings.DURABLE_APPROVAL_WEBHOOK_URL = ""
    approval = make_approval(arguments={"order": "A-7", "amount": 90})
    assert notify.send(approval.pk, "requested") == {"emails": 1, "webhook": None}
    message = mail.outbox[-1]
    assert sorted(message.to) == sorted(u.email for u in people.values() if u.groups.filter(name="reviewers").exists())
    assert "refund" in message.subject and f"run {approval.run_id}" in message.subject
    assert '"amount": 90' in message.body
    link = next(line for line in message.body.splitlines() if line.startswith("Decide: ")).removeprefix("Decide: ")
    assert link.startswith(f"https://durable.example.com/approvals/{approval.pk}/?link=")
    path = link.removeprefix("https://durable.example.com")
    response = logged_in(people["ana"]).get(path)
    assert response.status_code == 200
    assert AuditRecord.objects.filter(approval=approval, action="viewed", data={"via": "link"}).count() == 1
    tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    assert logged_in(people["ana"]).get(tampered).status_code == 400


def test_it_signs_the_webhook_with_hmac(people: Any, settings: Any, webhook: Any) -> None:
    url, received = webhook
    settings.DURABLE_APPROVAL_WEBHOOK_URL = url
    settings.DURABLE_APPROVAL_WEBHOOK_SECRET = "s3cret-for-tests"
    approval = make_approval(arguments={"order": "A-9", "amount": 12})
    result = notify.send(approval.pk, "requested")
    assert result["webhook"] == 204 and len(received) == 1
    request = received[0]
    body = request["body"]
    expected = "sha256=" + hmac.new(b"s3cret-for-tests", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Durable-Signature"], expected)
    payload = json.loads(body)
    assert payload["event"] == "approval.requested" and payload["approval"] == approval.pk
    assert payload["arguments"] == {"order": "A-9", "amount": 12} and payload["group"] == "reviewers"
    assert payload["url"].startswith(settings.DURABLE_BASE_URL) and "link=" in payload["url"]
    assert request["path"] == "/hooks/approvals"
    forged = "sha256=" + hmac.new(b"another-secret", body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(forged, request["headers"]["X-Durable-Signature"])


def test_it_sends_no_signature_without_a_secret(people: Any, settings: Any, webhook: Any) -> None:
    url, received = webhook
    settings.DURABLE_APPROVAL_WEBHOOK_URL = url
    settings.DURABLE_APPROVAL_WEBHOOK_SECRET = ""
    notify.send(make_approval().pk, "escalated")
    assert "X-Durable-Signature" not in received[0]["headers"]
    assert json.loads(received[0]["body"])["event"] == "approval.escalated"


def test_it_keeps_signed_links_to_their_approval(people: Any) -> None:
    approval = make_approval()
    token = notify.signed_link(approval.pk).split("link=")[1]
    assert notify.check_link(approval.pk, token)
    assert not notify.check_link(approval.pk + 1, token)
    assert not notify.check_link(approval.pk, token, max_age=-1)
    assert not notify.check_link(approval.pk, "x" + token)
    assert logged_in(people["op"]).get(reverse("approvals:detail", args=[approval.pk]), {"link": token}).status_code == 403
