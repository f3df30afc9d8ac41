"""The roles: Django groups with the permissions that views, API calls and websockets check.

operators  view runs                      durable.view_run
reviewers  decide approvals               approvals.decide_approval (added by the approvals app)
run admins start, pause, resume, cancel, retry runs   durable.view_run + durable.control_run
Staff and superusers use Django admin. The groups are created (and their permissions restored) after
every `migrate`, so a fresh database has them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission

OPERATORS = "operators"
REVIEWERS = "reviewers"
RUN_ADMINS = "run admins"

VIEW_RUNS = "durable.view_run"
CONTROL_RUNS = "durable.control_run"
DECIDE_APPROVALS = "approvals.decide_approval"

ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    OPERATORS: (VIEW_RUNS,),
    REVIEWERS: (VIEW_RUNS, DECIDE_APPROVALS),
    RUN_ADMINS: (VIEW_RUNS, CONTROL_RUNS),
}


def ensure_roles(app_config: Any = None, **kwargs: Any) -> None:
    # After the apps whose permissions the roles use have migrated (their permissions are created
    # by an earlier post_migrate receiver), not once per installed app.
    if app_config is not None and app_config.label not in {"durable", "approvals"}:
        return
    for group_name, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:  # approvals' permission exists once that app has migrated
                wanted.append(perm)
        group.permissions.add(*wanted)
