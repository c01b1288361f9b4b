"""Operator admin for sessions: lists, filters, id search, runs and latest events in order.

Status is read-only here: operators change it through the actions, which call the
lifecycle services (so transitions are checked and each one writes its event).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from asm_core.errors import AsmError
from asm_core.records import parse_uuid
from events.selectors import event_list
from runs.models import Run
from sessions import services
from sessions.models import Session

LATEST_EVENTS = 50


class RunInline(admin.TabularInline[Run, Session]):
    model = Run
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "status", "provider", "attempt", "created_at", "started_at", "ended_at")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False


def _transition_action(
    name: str, service: Callable[..., Session], label: str
) -> Callable[[admin.ModelAdmin[Session], HttpRequest, QuerySet[Session]], None]:
    def action(
        modeladmin: admin.ModelAdmin[Session], request: HttpRequest, queryset: QuerySet[Session]
    ) -> None:
        done, refused = 0, []
        for session in queryset:
            try:
                service(session_id=session.id, actor=request.user)
                done += 1
            except AsmError as exc:
                refused.append(f"{session.id}: {exc.message}")
        if done:
            modeladmin.message_user(request, f"{label}: {done} session(s).", messages.SUCCESS)
        for line in refused:
            modeladmin.message_user(request, line, messages.ERROR)

    action.__name__ = name
    return admin.action(description=f"{label} selected sessions")(action)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin[Session]):
    list_display = ("id", "agent_id", "status", "owner", "last_sequence", "created_at")
    list_filter = ("status", "agent_id")
    search_fields = ("agent_id",)
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "status",
        "last_sequence",
        "created_at",
        "updated_at",
        "latest_events",
    )
    fields = (
        "id",
        "agent_id",
        "status",
        "owner",
        "parent_session",
        "context",
        "metadata",
        "tags",
        "last_sequence",
        "created_at",
        "updated_at",
        "latest_events",
    )
    raw_id_fields = ("owner", "parent_session")
    inlines = (RunInline,)
    actions = (
        _transition_action("activate", services.session_activate, "Activate"),
        _transition_action("pause", services.session_pause, "Pause"),
        _transition_action("resume", services.session_resume, "Resume"),
        _transition_action("complete", services.session_complete, "Complete"),
        _transition_action("cancel", services.session_cancel, "Cancel"),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sessions are created through the service (it writes session_created)

    def has_delete_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False  # the event log is append-only, and it hangs off the session

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Session], search_term: str
    ) -> tuple[QuerySet[Session], bool]:
        found = parse_uuid(search_term)
        if found is not None:
            return queryset.filter(id=found), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=f"Latest {LATEST_EVENTS} events (oldest first)")
    def latest_events(self, obj: Session) -> str:
        after = max(0, obj.last_sequence - LATEST_EVENTS)
        rows = [
            (e.sequence_number, e.type, e.run_id or "", e.timestamp.isoformat())
            for e in event_list(session_id=obj.id, after=after)
        ]
        if not rows:
            return "no events"
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><thead><tr><th>#</th><th>type</th><th>run</th><th>time</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            body,
        )
