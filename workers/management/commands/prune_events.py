"""`manage.py prune_events`: one retention pass by hand (the beat task's job, `runs.retention`).

    manage.py prune_events [--days N | --older-than ISO] [--runs N] [--dry-run]

Without `--days`/`--older-than` it uses ASM_RETENTION_STREAMED_DAYS (0: nothing to do).
`--dry-run` reports what a pass would replace and changes nothing. Audited as the actor
`command:prune_events`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone


class Command(BaseCommand):
    help = "Replace old finished runs' message_streamed chunks by events_pruned markers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="prune runs that ended over N days ago")
        parser.add_argument("--older-than", help="prune runs that ended before this ISO time")
        parser.add_argument("--runs", type=int, help="at most this many runs (default: batch)")
        parser.add_argument("--dry-run", action="store_true", help="report only, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        from runs.retention import events_prune_streamed

        older_than: datetime | None = None
        if options["days"] is not None and options["older_than"]:
            raise CommandError("give --days or --older-than, not both")
        if options["days"] is not None:
            if options["days"] < 0:
                raise CommandError("--days must be >= 0")
            older_than = timezone.now() - timedelta(days=options["days"])
        elif options["older_than"]:
            try:
                older_than = datetime.fromisoformat(options["older_than"])
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}") from exc
            if older_than.tzinfo is None:
                raise CommandError("--older-than needs a time zone (e.g. 2026-01-01T00:00Z)")
        report = events_prune_streamed(
            older_than=older_than,
            run_limit=options["runs"],
            dry_run=options["dry_run"],
            actor="command:prune_events",
        )
        if not report.enabled:
            self.stdout.write("retention is off (ASM_RETENTION_STREAMED_DAYS=0); nothing done")
            return
        verb = "would replace" if report.dry_run else "replaced"
        self.stdout.write(
            f"{report.runs} runs: {verb} {report.pruned} message_streamed events "
            f"by {report.ranges} events_pruned markers (ended before {report.cutoff})"
        )
