from django.apps import AppConfig


class DurableConfig(AppConfig):
    name = "durable"
    verbose_name = "Durable engine"

    def ready(self) -> None:
        from durable import registry

        registry.autodiscover()
