"""Approvals in Django admin: read-only; decisions go through approvals.decisions; the audit trail
can be neither edited nor deleted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from approvals import decisions
from approvals.models import Approval, AuditRecord, Vote


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditInline(admin.TabularInline):
    model = AuditRecord
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "actor", "action", "data")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _decide(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Approval], approved: bool) -> None:
    for approval in queryset:
        try:
            decisions.decide(
                approval_id=approval.pk, user=request.user, approved=approved,
                reason="" if approved else "rejected in admin",
            )
            modeladmin.message_user(request, f"approval {approval.pk}: {'approved' if approved else 'rejected'}")
        except decisions.ApprovalError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)


@admin.action(description="Approve selected (each checked on its own)")
def approve(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
    _decide(modeladmin, request, queryset, True)


@admin.action(description="Reject selected (each checked on its own)")
def reject(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
    _decide(modeladmin, request, queryset, False)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ("id", "tool", "run", "status", "group", "created_at", "expires_at", "decided_by", "decided_how")
    list_filter = ("status", "tool", "group", "decided_how")
    search_fields = ("=id", "=run__id", "tool")
    raw_id_fields = ("run", "decided_by")
    list_select_related = ("run", "decided_by")
    show_full_result_count = False
    inlines = [AuditInline]
    actions = [approve, reject]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)  # the changelist (for actions) only


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ("id", "approval", "action", "actor", "created_at")
    list_filter = ("action",)
    search_fields = ("=approval__id",)
    raw_id_fields = ("approval", "actor")
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    list_display = ("approval", "user", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
