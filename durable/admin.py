"""Django admin for runs, steps and events. Status, lease and sequence fields are read-only; state
changes go through the same control functions as the UI (trap 25). django-q2's admin, whose
schedules can run arbitrary functions, is shown to superusers only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from durable import control
from durable.errors import DurableError
from durable.models import Event, Run, Signal, Step


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StepInline(ReadOnlyInline):
    model = Step
    fields = readonly_fields = ("seq", "kind", "name", "status", "attempts", "worker", "epoch", "started_at", "finished_at")


class EventInline(ReadOnlyInline):
    model = Event
    fields = readonly_fields = ("seq", "type", "data", "created_at")


def _apply(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run], action: str) -> None:
    done, refused = 0, []
    for run in queryset:
        try:
            getattr(control, action)(run.pk, user=request.user)
            done += 1
        except DurableError as exc:
            refused.append(str(exc))
    if done:
        modeladmin.message_user(request, f"{action}: {done} run(s)", messages.SUCCESS)
    for reason in refused[:10]:
        modeladmin.message_user(request, reason, messages.WARNING)


@admin.action(description="Pause selected runs", permissions=["change"])
def pause_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _apply(modeladmin, request, queryset, "pause")


@admin.action(description="Resume selected runs", permissions=["change"])
def resume_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _apply(modeladmin, request, queryset, "resume")


@admin.action(description="Cancel selected runs", permissions=["change"])
def cancel_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _apply(modeladmin, request, queryset, "cancel")


@admin.action(description="Retry selected runs from the failed step", permissions=["change"])
def retry_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    _apply(modeladmin, request, queryset, "retry")


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow", "status", "next_seq", "started_by", "created_at", "finished_at", "lease_owner", "recoveries")
    list_filter = ("status", "workflow", "created_at")
    search_fields = ("=id", "workflow", "idempotency_key")
    date_hierarchy = "created_at"
    list_select_related = ("started_by",)
    show_facets = admin.ShowFacets.ALWAYS
    show_full_result_count = False
    raw_id_fields = ("parent", "started_by")
    actions = [pause_runs, resume_runs, cancel_runs, retry_runs]
    inlines = [StepInline]
    readonly_fields = (
        "workflow", "workflow_version", "status", "input", "output", "error", "idempotency_key", "parent",
        "parent_seq", "started_by", "created_at", "started_at", "finished_at", "updated_at", "next_seq",
        "lease_owner", "lease_epoch", "lease_expires_at", "dispatched_at", "wake_at", "event_seq", "claims",
        "recoveries", "stalls", "events_link",
    )

    @admin.display(description="events")
    def events_link(self, run: Run) -> str:
        url = reverse("admin:durable_event_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{} events</a>', url, run.event_seq)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started through the engine, which validates input and dispatches


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ("run", "seq", "kind", "name", "status", "attempts", "worker", "started_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("=run__id", "name")
    raw_id_fields = ("run",)
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Step._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("run", "seq", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("=run__id", "type")
    raw_id_fields = ("run",)
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Event._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Signal)
class SignalAdmin(admin.ModelAdmin):
    list_display = ("run", "name", "created_at", "consumed_seq")
    raw_id_fields = ("run",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Signal._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def _superuser_only(model_admin: admin.ModelAdmin) -> None:
    def allowed(request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    for name in ("has_module_permission", "has_view_permission", "has_add_permission",
                 "has_change_permission", "has_delete_permission"):
        setattr(model_admin, name, allowed)


for _model, _model_admin in list(admin.site._registry.items()):
    if _model._meta.app_label == "django_q":
        _superuser_only(_model_admin)
