"""Operator admin for runs: a read-only list with status/provider filters and id search.

Runs are created and moved through their lifecycle by services only, so nothing here edits;
the one write is the bulk "Cancel selected runs" action, which calls `runs.services.run_cancel`
for each run (pending: cancelled at once; running: its worker is signalled; finished:
unchanged). The list shows each run's duration, tokens and cost (`run_duration`,
`run_total_tokens`, also used by the session console).

"Provider health" (`admin/runs/run/providers/`, linked from the runs list) shows every
provider's fleet-wide health and resets one (`runs.health.provider_health_reset`; needs the
change-run permission).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from asm_core.errors import AsmError
from asm_core.lifecycle import RUN_TERMINAL, RunStatus
from asm_core.records import parse_uuid
from runs.bootstrap import provider_health, provider_registry
from runs.health import provider_health_list, provider_health_reset
from runs.models import Run
from runs.services import run_cancel
from sessions.audit import audit_record


def run_duration(run: Run) -> timedelta | None:
    """started -> ended; for a running run, started -> now; None before it started."""
    if run.started_at is None:
        return None
    end = run.ended_at or (None if run.status in RUN_TERMINAL else timezone.now())
    return None if end is None else max(timedelta(0), end - run.started_at)


def format_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def run_total_tokens(run: Run) -> int | None:
    """`total_tokens` when the provider reported it, else input + output; None if no usage."""
    usage = run.token_usage if isinstance(run.token_usage, dict) else {}
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    parts = [
        v
        for k in ("input_tokens", "output_tokens")
        if isinstance(v := usage.get(k), int) and not isinstance(v, bool)
    ]
    return sum(parts) if parts else None


def format_cost(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.4f}"


@admin.action(description="Cancel selected runs")
def cancel_runs(modeladmin: RunAdmin, request: HttpRequest, queryset: QuerySet[Run]) -> None:
    actor = request.user if isinstance(request.user, AbstractBaseUser) else None
    cancelled = requested = unchanged = 0
    for run_id, before in queryset.values_list("id", "status"):
        try:
            run = run_cancel(run_id=run_id, actor=actor)
        except AsmError as exc:
            modeladmin.message_user(request, f"{run_id}: {exc.message}", messages.ERROR)
            continue
        if before in RUN_TERMINAL:
            unchanged += 1
        elif run.status == RunStatus.CANCELLED:
            cancelled += 1
        elif run.status in RUN_TERMINAL:
            unchanged += 1  # it finished on its own meanwhile
        else:
            requested += 1  # running: its worker is signalled and ends it `cancelled`
    parts = []
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    if requested:
        parts.append(f"{requested} running: cancel requested")
    if unchanged:
        parts.append(f"{unchanged} already finished: unchanged")
    if parts:
        modeladmin.message_user(request, "Runs: " + ", ".join(parts) + ".", messages.SUCCESS)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin[Run]):
    list_display = (
        "id",
        "session",
        "status",
        "provider_display",
        "attempt",
        "created_at",
        "duration_display",
        "tokens_display",
        "cost_display",
    )
    list_filter = ("status", "provider", "session__agent_id")
    ordering = ("-created_at",)
    search_fields = ("provider",)
    list_select_related = ("session",)
    actions = (cancel_runs,)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.provider_health_view)
        return [path("providers/", view, name="runs_run_providers"), *super().get_urls()]

    def provider_health_view(self, request: HttpRequest) -> HttpResponse:
        """Provider health (GET); POST `provider=<name>` resets that provider's health
        (needs the change-run permission)."""
        can_reset = request.user.has_perm("runs.change_run")
        if request.method == "POST":
            name = request.POST.get("provider", "")
            if not can_reset:
                raise PermissionDenied
            try:
                provider_health_reset(provider_registry(), provider_health(), name)
            except AsmError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                outcome = exc.code
            else:
                self.message_user(request, f"Health of {name!r} reset.", messages.SUCCESS)
                outcome = "ok"
            audit_record(
                action="provider.health_reset",
                actor=request.user,
                object_type="provider",
                object_id=name,
                outcome=outcome,
            )
            return HttpResponseRedirect(request.path)
        health = provider_health()
        context = {
            **self.admin_site.each_context(request),
            "title": "Provider health",
            "providers": provider_health_list(provider_registry(), health),
            "can_reset": can_reset,
            "failure_threshold": health.failure_threshold,
            "cooldown_ms": health.cooldown_ms,
            "store": type(health).__name__,
        }
        return TemplateResponse(request, "admin/runs/provider_health.html", context)

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

    @admin.display(description="provider", ordering="provider")
    def provider_display(self, obj: Run) -> str:
        if obj.routed_provider and obj.routed_provider != obj.provider:
            return f"{obj.provider} -> {obj.routed_provider}"
        return obj.provider or "-"

    @admin.display(description="duration", ordering="ended_at")
    def duration_display(self, obj: Run) -> str:
        return format_duration(run_duration(obj))

    @admin.display(description="tokens")
    def tokens_display(self, obj: Run) -> str:
        total = run_total_tokens(obj)
        return "-" if total is None else f"{total:,}"

    @admin.display(description="cost", ordering="cost_usd")
    def cost_display(self, obj: Run) -> str:
        return format_cost(obj.cost_usd)
