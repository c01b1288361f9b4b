"""Operator admin for sessions: lists, filters, id search, runs and latest events in order.

Status is read-only here: operators change it through the actions, which call the
lifecycle services (so transitions are checked and each one writes its event).

A session's change page also carries the operator console
(`templates/admin/agent_sessions/session/change_form.html` + `static/asm/console.js`): the
event timeline live over the WebSocket, streamed text assembled as it arrives, and buttons
that call the public API with the admin's login cookie and CSRF token (submit a prompt,
cancel a run, complete or fail the session). `console_config` is the data it starts from.

Agent manifests are edited here with the same validation as `/api/v1/agents`; owner budgets
show the current window's spend and reservations (`runs.budgets.budget_status`). Saving
either clears this process's cache (others follow within `ASM_AGENT_CACHE_S` /
`ASM_BUDGET_CACHE_S`).

The audit log (`AuditEntry`) is listed read-only: no add, change or delete.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from asm_core.errors import AsmError
from asm_core.records import parse_uuid
from events.selectors import event_list
from runs.admin import format_cost, format_duration, run_duration, run_total_tokens
from runs.models import Run
from sessions import services
from sessions.agents import AGENT_FIELDS, agent_cache_clear, agent_validate
from sessions.audit import AuditedBulkDeletesMixin
from sessions.models import Agent, AuditEntry, Budget, Session

LATEST_EVENTS = 50
CONSOLE_HISTORY = 1000  # the console's timeline starts this many events before the latest
CONSOLE_RUNS = 200  # at most this many (newest) runs are listed when the page opens


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def console_run(run: Run) -> dict[str, Any]:
    """A run as the console's runs panel reads it (the API's run fields it uses)."""
    return {
        "id": str(run.id),
        "status": run.status,
        "provider": run.provider,
        "routed_provider": run.routed_provider,
        "token_usage": run.token_usage if isinstance(run.token_usage, dict) else {},
        "cost_usd": None if run.cost_usd is None else str(run.cost_usd),
        "error": run.error,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "cancel_requested_at": _iso(run.cancel_requested_at),
    }


def console_config(session: Session) -> dict[str, Any]:
    """What the console script starts from (rendered with `json_script`)."""
    prefix = get_script_prefix()
    newest = Run.objects.filter(session_id=session.id).order_by("-created_at", "-id")
    runs = [console_run(run) for run in newest[:CONSOLE_RUNS]]
    runs.reverse()
    return {
        "session_id": str(session.id),
        "status": session.status,
        "last_sequence": session.last_sequence,
        "history": CONSOLE_HISTORY,
        "api_base": f"{prefix}api/v1/",
        "ws_path": f"{prefix}ws/sessions/{session.id}/events",
        "default_provider": settings.ASM_DEFAULT_PROVIDER,
        "runs": runs,
    }


class RunInline(admin.TabularInline[Run, Session]):
    model = Run
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "id",
        "status",
        "provider",
        "attempt",
        "created_at",
        "started_at",
        "ended_at",
        "duration",
        "tokens",
        "cost",
    )
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Session | None = None) -> bool:
        return False

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        return format_duration(run_duration(obj))

    @admin.display(description="tokens")
    def tokens(self, obj: Run) -> str:
        total = run_total_tokens(obj)
        return "-" if total is None else f"{total:,}"

    @admin.display(description="cost")
    def cost(self, obj: Run) -> str:
        return format_cost(obj.cost_usd)


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

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        session = self.get_object(request, object_id)
        if session is not None:
            context["asm_console"] = console_config(session)
        return super().change_view(request, object_id, form_url, extra_context=context)

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


# --------------------------------------------------------------------------- agents, budgets
class AgentAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """The manifest is checked like the API checks it (`sessions.agents.agent_validate`)."""

    class Meta:
        model = Agent
        fields = AGENT_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        try:
            values = agent_validate({k: cleaned.get(k) for k in AGENT_FIELDS})
        except AsmError as exc:
            where = exc.details.get("field") if isinstance(exc.details, dict) else None
            top = str(where).split(".")[0].split("[")[0] if where else None
            if top in self.fields:
                self.add_error(top, exc.message)
            else:
                raise forms.ValidationError(exc.message) from exc
            return cleaned
        cleaned.update(values)
        return cleaned


@admin.register(Agent)
class AgentAdmin(AuditedBulkDeletesMixin, admin.ModelAdmin[Agent]):
    form = AgentAdminForm
    list_display = ("agent_id", "name", "version", "provider", "updated_at")
    search_fields = ("agent_id", "name", "description")
    ordering = ("agent_id",)
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        agent_cache_clear()

    def delete_model(self, request: HttpRequest, obj: Agent) -> None:
        super().delete_model(request, obj)
        agent_cache_clear()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        super().delete_queryset(request, queryset)
        agent_cache_clear()


@admin.register(Budget)
class BudgetAdmin(AuditedBulkDeletesMixin, admin.ModelAdmin[Budget]):
    list_display = ("owner", "window", "max_tokens", "max_cost_usd", "on_exceed", "enabled")
    list_filter = ("window", "on_exceed", "enabled")
    search_fields = ("owner__username",)
    raw_id_fields = ("owner",)
    readonly_fields = ("created_at", "updated_at", "current_window")

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        from runs.budgets import budget_cache_clear

        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        budget_cache_clear()

    @admin.display(description="Current window")
    def current_window(self, obj: Budget) -> str:
        from runs.budgets import budget_status

        if obj.pk is None:
            return "-"
        status = budget_status(obj)
        return (
            f"{status['window_start']} .. {status['window_end']}: spent "
            f"{status['spent_tokens']:,} tokens, ${status['spent_cost_usd']}; reserved "
            f"{status['reserved_tokens']:,} tokens, ${status['reserved_cost_usd']}"
        )


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    """The audit log, read-only (append-only: no add, change or delete here)."""

    list_display = ("created_at", "actor", "action", "object_type", "object_id", "outcome")
    list_filter = ("action", "outcome", "object_type")
    search_fields = ("=actor", "=object_id", "action")
    date_hierarchy = "created_at"
    readonly_fields = (
        "created_at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "outcome",
        "detail",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
