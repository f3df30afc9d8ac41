"""Demo users (one per role) and demo runs for `make run`."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.db import transaction

from durable import control
from durable.models import Run

DEMO_PASSWORD = "durable-demo"
# username -> (groups, is_staff, is_superuser)
DEMO_USERS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "operator": (("operators",), False, False),
    "reviewer": (("operators", "reviewers"), False, False),
    "runadmin": (("operators", "run admins"), False, False),
    "staff": (("operators", "reviewers", "run admins"), True, True),
}


def create_demo_users() -> list[str]:
    created = []
    with transaction.atomic():
        for username, (groups, is_staff, is_superuser) in DEMO_USERS.items():
            user, new = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
            if new:
                user.set_password(DEMO_PASSWORD)
            user.is_staff, user.is_superuser = is_staff, is_superuser
            user.save()
            user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])
            created.append(username)
    return created


def create_demo_runs() -> list[int]:
    """A handful of runs, once: a long analysis to watch live and a few short ones."""
    if Run.objects.filter(idempotency_key__startswith="demo-").exists():
        return []
    runs = [
        control.start("demo.analysis", {"chunks": 40, "step_ms": 500}, idempotency_key="demo-long"),
        control.start("demo.analysis", {"chunks": 8, "step_ms": 100}, idempotency_key="demo-short-1"),
        control.start("demo.analysis", {"chunks": 12, "step_ms": 50}, idempotency_key="demo-short-2"),
        # approvals for the inbox: approve one, edit the amount of another, reject the third
        control.start("demo.refund", {"order": "A-1042", "amount": 120, "reason": "arrived damaged"},
                      idempotency_key="demo-refund-1"),
        control.start("demo.refund", {"order": "A-1042", "amount": 480, "reason": "customer asks for all of it"},
                      idempotency_key="demo-refund-2"),
        control.start("demo.refund", {"order": "A-1042", "amount": 35, "reason": "late delivery", "expires_after": 3600},
                      idempotency_key="demo-refund-3"),
    ]
    from durable.demo_agents import start_demo_runs

    return [run.pk for run in runs] + start_demo_runs()
