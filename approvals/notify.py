"""Notifications of approval requests: an email to the deciding group with a signed link, and an
optional webhook POST signed with HMAC-SHA256. Both are django-q2 tasks enqueued in the request's
transaction (so a notification exists exactly when the request committed) carrying only the id."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.request
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import send_mail
from django_q.tasks import async_task

from approvals.models import Approval

log = logging.getLogger("approvals.notify")
SALT = "approvals.link"


def enqueue(approval_id: int, event: str) -> None:
    async_task("approvals.notify.send", approval_id, event, q_options={"task_name": f"approval-{approval_id}-{event}"})


def signed_link(approval_id: int) -> str:
    token = signing.dumps({"approval": approval_id}, salt=SALT)
    return f"{settings.DURABLE_BASE_URL.rstrip('/')}/approvals/{approval_id}/?link={token}"


def check_link(approval_id: int, token: str, max_age: float = 7 * 86400) -> bool:
    try:
        return signing.loads(token, salt=SALT, max_age=max_age).get("approval") == approval_id
    except signing.BadSignature:
        return False


def send(approval_id: int, event: str) -> dict[str, Any]:
    approval = Approval.objects.select_related("run").get(pk=approval_id)
    link = signed_link(approval.pk)
    recipients = list(
        get_user_model().objects.filter(groups__name=approval.group, is_active=True)
        .exclude(email="").values_list("email", flat=True).distinct()
    )
    subject = f"[durable] approval needed: {approval.tool} (run {approval.run_id})"
    if event == "escalated":
        subject = f"[durable] escalated to {approval.group}: {approval.tool} (run {approval.run_id})"
    body = (
        f"Run {approval.run_id} ({approval.run.workflow}) asks to call {approval.tool} with:\n\n"
        f"{json.dumps(approval.arguments, indent=2)}\n\nDecide: {link}\n"
    )
    sent = send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients) if recipients else 0
    hooked = post_webhook(approval, event, link)
    return {"emails": sent, "webhook": hooked}


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(approval: Approval, event: str, link: str) -> int | None:
    url = settings.DURABLE_APPROVAL_WEBHOOK_URL
    if not url:
        return None
    body = json.dumps({
        "event": f"approval.{event}",
        "approval": approval.pk,
        "run": approval.run_id,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "group": approval.group,
        "expires_at": approval.expires_at.isoformat() if approval.expires_at else None,
        "url": link,
    }).encode()
    headers = {"Content-Type": "application/json"}
    if settings.DURABLE_APPROVAL_WEBHOOK_SECRET:
        headers["X-Durable-Signature"] = webhook_signature(settings.DURABLE_APPROVAL_WEBHOOK_SECRET, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (configured URL)
        return int(response.status)
