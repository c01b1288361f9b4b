"""Operator admin for the event log: strictly read-only (no add, change or delete)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from asm_core.records import parse_uuid
from events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin[Event]):
    list_display = ("sequence_number", "type", "session", "run", "provider", "timestamp")
    list_filter = ("type", "provider")
    ordering = ("session", "sequence_number")
    search_fields = ("type",)
    list_select_related = ("session", "run")

    def get_readonly_fields(self, request: HttpRequest, obj: Event | None = None) -> list[str]:
        return [f.name for f in Event._meta.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Event], search_term: str
    ) -> tuple[QuerySet[Event], bool]:
        found = parse_uuid(search_term)
        if found is not None:
            return (
                queryset.filter(id=found)
                | queryset.filter(session_id=found)
                | queryset.filter(run_id=found),
                False,
            )
        return super().get_search_results(request, queryset, search_term)
