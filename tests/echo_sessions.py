"""A session whose echo runs really ran: the real executor on the Django store, one run at a
time (claim, execute), as a worker would. For tests that need a genuine event log
(compaction, continuity, retention) without a Celery worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import User

from asm_core.records import RunRecord
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers.echo import EchoProvider
from runs.providers.registry import ProviderRegistry
from runs.store import DjangoSessionStore
from sessions.services import session_activate, session_create

OWNER = "echo-sessions-test"


def echo_session_execute(
    prompts: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    agent_id: str,
    owner: User | None = None,
    metadata: Mapping[str, Any] | None = None,
    flush_interval_s: float = 0.01,
) -> uuid.UUID:
    """Create and activate a session, run each (prompt, echo adapter_opts) to its end in
    order (run `metadata` on each), and return the session's id."""
    session = session_create(agent_id=agent_id, owner=owner)
    session_activate(session_id=session.id)
    store = DjangoSessionStore()
    reg = ProviderRegistry()
    reg.register(EchoProvider())
    config = ExecutorConfig(flush_interval_s=flush_interval_s, tick_s=0.01)
    for prompt, opts in prompts:
        store.run_save(
            RunRecord(
                session_id=session.id,
                provider="echo",
                input={"prompt": prompt},
                options={"adapter_opts": dict(opts)},
                metadata=dict(metadata or {}),
            )
        )
        claimed = store.run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
        assert claimed is not None
        RunExecutor(store, reg, owner=OWNER, config=config).execute(claimed, claimed=True)
    return session.id
