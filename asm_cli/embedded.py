"""Embedded mode: the `asm` command without a server (no `ASM_URL`).

Invariants: Django is set up with the default settings (`asm_project.settings.base`; the
SQLite file is `ASM_SQLITE_PATH`, default var/asm.sqlite3), the database is migrated if
needed, and the in-process worker (`workers.embedded.EmbeddedWorker`) executes runs in the
background of this process, exactly as `asm serve` would. The methods call the services and
selectors directly and return the API's JSON shapes.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from asm_cli.client import CliError


def _django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", verbosity=0, interactive=False)


def _json(data: Any) -> Any:
    import json

    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(data, cls=JSONEncoder))


class EmbeddedBackend:
    def __init__(self, worker: Any) -> None:
        self._worker = worker

    @classmethod
    def start(cls) -> EmbeddedBackend:
        _django_setup()
        # The worker's own log lines would interleave with the rendered stream.
        for name in ("celery", "workers", "runs", "events", "sessions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from workers.embedded import EmbeddedWorker

        return cls(EmbeddedWorker().start())

    @staticmethod
    def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
        from asm_core.errors import AsmError

        try:
            return fn(*args, **kwargs)
        except AsmError as exc:
            raise CliError(exc.code, exc.message) from exc

    @staticmethod
    def _uuid(value: str, code: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise CliError(code, f"Not an id: {value}") from None

    def _session(self, session: Any) -> dict[str, Any]:
        from sessions.api import SessionOutputSerializer

        return dict(_json(SessionOutputSerializer(session).data))

    def _run(self, run: Any) -> dict[str, Any]:
        from runs.api import RunOutputSerializer

        return dict(_json(RunOutputSerializer(run).data))

    def session_create(self, *, agent_id: str) -> dict[str, Any]:
        from sessions.services import session_create

        return self._session(self._guard(session_create, agent_id=agent_id))

    def session_latest(self) -> dict[str, Any] | None:
        from sessions.models import Session

        session = Session.objects.order_by("-created_at").first()
        return self._session(session) if session else None

    def session_list(self) -> list[dict[str, Any]]:
        from sessions.models import Session

        return [self._session(s) for s in Session.objects.order_by("-created_at")[:50]]

    def run_submit(
        self, *, session_id: str, prompt: str, provider: str | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        from runs.services import run_submit

        created = self._guard(
            run_submit,
            session_id=self._uuid(session_id, "session_not_found"),
            input={"prompt": prompt},
            provider=provider,
            options=options,
        )
        return self._run(created.run)

    def run_get(self, *, run_id: str) -> dict[str, Any]:
        from runs.models import Run

        run = Run.objects.filter(id=self._uuid(run_id, "run_not_found")).first()
        if run is None:
            raise CliError("run_not_found", f"Run not found: {run_id}")
        return self._run(run)

    def run_list(self, *, session_id: str) -> list[dict[str, Any]]:
        from runs.selectors import run_list_for_session

        sid = self._uuid(session_id, "session_not_found")
        return [self._run(r) for r in run_list_for_session(session_id=sid)]

    def run_cancel(self, *, run_id: str) -> dict[str, Any]:
        from runs.services import run_cancel

        run = self._guard(run_cancel, run_id=self._uuid(run_id, "run_not_found"))
        return self._run(run)

    def event_page(
        self, *, session_id: str, after: int, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        from events.publish import event_json
        from events.selectors import event_list

        sid = self._uuid(session_id, "session_not_found")
        rid = self._uuid(run_id, "run_not_found") if run_id else None
        return [
            event_json(e) for e in event_list(session_id=sid, after=after, limit=1000, run_id=rid)
        ]

    def provider_list(self) -> list[dict[str, Any]]:
        from runs.api import ProviderListOutputSerializer
        from runs.bootstrap import provider_health, provider_registry
        from runs.health import provider_health_list

        providers = provider_health_list(provider_registry(), provider_health())
        return list(_json(ProviderListOutputSerializer({"results": providers}).data)["results"])

    def close(self) -> None:
        # The worker's threads are daemons: a full stop joins them for seconds, and this
        # process is about to exit. Give the stop a moment, then let the exit end it.
        stopper = threading.Thread(target=self._worker.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=0.5)
