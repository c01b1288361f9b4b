"""Cursor pagination for the API's lists (`?cursor=`, `?page_size=`, `?ordering=`).

Cursor pagination (DRF `CursorPagination`) gives stable pages while rows are being added:
a page never repeats or skips a row because a newer one arrived. The cursor is opaque;
clients follow the `next` / `previous` links of a page.

Invariants: a bad `cursor`, `page_size` or `ordering` is a 400 `validation_error` (never a
404 or a silent fallback); the order is total (`created_at`, then `id`).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.views import APIView


class CreatedCursorPagination(CursorPagination):
    """Newest first by default; `?ordering=created_at` for oldest first."""

    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    ordering = "-created_at"
    #: The orderings a client may ask for with `?ordering=`.
    ordering_choices: tuple[str, ...] = ("-created_at", "created_at")
    ordering_query_param = "ordering"

    def get_ordering(
        self, request: Request, queryset: QuerySet[Any], view: APIView
    ) -> tuple[str, ...]:
        value = request.query_params.get(self.ordering_query_param) or str(self.ordering)
        if value not in self.ordering_choices:
            raise ValidationError(
                {
                    self.ordering_query_param: [
                        f"Must be one of: {', '.join(self.ordering_choices)}."
                    ]
                }
            )
        return (value, "-id" if value.startswith("-") else "id")

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get("page_size")
        if raw is None or raw == "":
            return self.page_size
        field = serializers.IntegerField(min_value=1, max_value=self.max_page_size)
        try:
            value: int = field.run_validation(raw)
        except ValidationError as exc:
            raise ValidationError({"page_size": exc.detail}) from None
        return value

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF checks a cursor's shape but not its position, which goes into the query as a
        # `created_at` bound: a forged position must be a 400 here, not a 500 there.
        try:
            cursor = super().decode_cursor(request)
            valid = cursor is None or _is_aware_datetime(cursor.position)
        except NotFound:
            valid = False
        if not valid:
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        return cursor


def _is_aware_datetime(position: object) -> bool:
    """A cursor position is absent, or the `created_at` (with its offset) of a row."""
    if position is None:
        return True
    if not isinstance(position, str):
        return False
    try:
        parsed = parse_datetime(position)
    except ValueError:
        return False
    return parsed is not None and parsed.tzinfo is not None


class OldestFirstCursorPagination(CreatedCursorPagination):
    """Oldest first, always (a session's runs)."""

    page_size = 100
    ordering = "created_at"
    ordering_choices = ("created_at",)
