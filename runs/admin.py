"""Operator admin for runs: read-only list with status/provider filters and id search.

Runs are created and moved through their lifecycle by services only, so nothing here edits.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from asm_core.records import parse_uuid
from runs.models import Run


@admin.register(Run)
class RunAdmin(admin.ModelAdmin[Run]):
    list_display = (
        "id",
        "session",
        "status",
        "provider",
        "attempt",
        "created_at",
        "started_at",
        "ended_at",
    )
    list_filter = ("status", "provider", "session__agent_id")
    ordering = ("-created_at",)
    search_fields = ("provider",)
    list_select_related = ("session",)

    def get_readonly_fields(self, request: HttpRequest, obj: Run | None = None) -> list[str]:
        return [f.name for f in Run._meta.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Run], search_term: str
    ) -> tuple[QuerySet[Run], bool]:
        found = parse_uuid(search_term)
        if found is not None:
            return queryset.filter(id=found) | queryset.filter(session_id=found), False
        return super().get_search_results(request, queryset, search_term)
