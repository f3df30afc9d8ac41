from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Run browser"

    def ready(self) -> None:
        from runs.roles import ensure_roles

        post_migrate.connect(ensure_roles, dispatch_uid="runs.ensure_roles")
