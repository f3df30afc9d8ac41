"""Wake inbox viewers after an approval changes. The database is the truth; this is only a poke."""

from __future__ import annotations

from django.db import transaction

from durable import live

INBOX_GROUP = "approvals"


def poke_on_commit() -> None:
    if live.redis_enabled():
        transaction.on_commit(lambda: live.send_group(INBOX_GROUP, {"type": "inbox.poke"}))
