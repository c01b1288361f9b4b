"""GET /api/v1/usage: the caller's token and cost totals, and their budgets' current windows.

Views only parse, call selectors (`runs.usage`, `runs.budgets.budget_status`) and serialize.
A user sees their own usage; staff may ask for another owner's with `?owner_id=` (for anyone
else that parameter is a 403 `permission_denied` unless it names themselves).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asm_project.api import enum_choices, error_responses, request_user
from runs.budgets import budget_status, budget_window
from runs.usage import owner_usage
from sessions.models import Budget


class UsageTotalsSerializer(serializers.Serializer[Any]):
    runs = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_read_input_tokens = serializers.IntegerField()
    cache_creation_input_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField(help_text="input + output (what budgets count).")
    cost_usd = serializers.FloatField(help_text="Sum of the runs' known costs.")
    runs_without_cost = serializers.IntegerField(
        help_text="Finished runs whose cost is unknown (no rates for their provider/model)."
    )
    cost_complete = serializers.BooleanField(help_text="False when some run's cost is unknown.")

    class Meta:
        ref_name = "UsageTotals"


class UsageWindowSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    usage = UsageTotalsSerializer(help_text="Of the runs that started in the window.")

    class Meta:
        ref_name = "UsageWindow"


class UsageWindowsSerializer(serializers.Serializer[Any]):
    daily = UsageWindowSerializer(help_text="The current UTC day.")
    monthly = UsageWindowSerializer(help_text="The current UTC month.")

    class Meta:
        ref_name = "UsageWindows"


class BudgetStatusSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    window = serializers.ChoiceField(choices=enum_choices(Budget.Window))
    max_tokens = serializers.IntegerField(allow_null=True)
    max_cost_usd = serializers.DecimalField(
        max_digits=14, decimal_places=6, coerce_to_string=False, allow_null=True
    )
    on_exceed = serializers.ChoiceField(choices=enum_choices(Budget.OnExceed))
    enabled = serializers.BooleanField()
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    spent_cost_usd = serializers.FloatField()
    spent_tokens = serializers.IntegerField()
    reserved_cost_usd = serializers.FloatField(help_text="Held by runs executing now.")
    reserved_tokens = serializers.IntegerField()
    reservations = serializers.IntegerField(help_text="How many runs hold a reservation.")

    class Meta:
        ref_name = "BudgetStatus"


class UsageOutputSerializer(serializers.Serializer[Any]):
    owner_id = serializers.IntegerField()
    totals = UsageTotalsSerializer(help_text="Every run of the owner's sessions.")
    windows = UsageWindowsSerializer()
    budgets = BudgetStatusSerializer(many=True)

    class Meta:
        ref_name = "Usage"


class UsageApi(APIView):
    """GET /api/v1/usage."""

    class FilterSerializer(serializers.Serializer[Any]):
        owner_id = serializers.IntegerField(required=False, min_value=1)

        class Meta:
            ref_name = "UsageFilter"

    @extend_schema(
        operation_id="usage_retrieve",
        tags=["usage"],
        summary="Your token and cost totals and budgets",
        description=(
            "Totals of every run of your sessions, of the runs started in the current UTC day "
            "and month, and each of your budgets with its current window's spend and live "
            "reservations. Staff may pass `owner_id`."
        ),
        parameters=[
            OpenApiParameter(
                "owner_id", OpenApiTypes.INT, description="Another owner's usage (staff only)."
            )
        ],
        responses={200: UsageOutputSerializer} | error_responses(400, 403),
    )
    def get(self, request: Request) -> Response:
        filters = UsageApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        user = request_user(request)
        owner_id = filters.validated_data.get("owner_id", user.pk)
        if owner_id != user.pk and not user.is_staff:
            raise PermissionDenied("Only staff may read another owner's usage")
        now = datetime.now(UTC)
        windows = {}
        for kind in Budget.Window.values:
            window = budget_window(kind, now)
            windows[kind] = {
                "start": window.start,
                "end": window.end,
                "usage": owner_usage(owner_id, since=window.start, until=window.end),
            }
        budgets = [
            {**_budget_fields(b), **budget_status(b, at=now)}
            for b in Budget.objects.filter(owner_id=owner_id).order_by("window")
        ]
        data = {
            "owner_id": owner_id,
            "totals": owner_usage(owner_id),
            "windows": windows,
            "budgets": budgets,
        }
        return Response(UsageOutputSerializer(data).data)


def _budget_fields(budget: Budget) -> dict[str, Any]:
    return {
        "id": budget.pk,
        "window": budget.window,
        "max_tokens": budget.max_tokens,
        "max_cost_usd": budget.max_cost_usd,
        "on_exceed": budget.on_exceed,
        "enabled": budget.enabled,
    }
