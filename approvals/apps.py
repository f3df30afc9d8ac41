from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals.decisions import close_for_run, expire_due
        from durable import control, recovery

        if close_for_run not in control.CANCEL_HOOKS:
            control.CANCEL_HOOKS.append(close_for_run)
        if expire_due not in recovery.SWEEP_HOOKS:
            recovery.SWEEP_HOOKS.append(expire_due)
