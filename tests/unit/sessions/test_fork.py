"""Fork: `sessions.fork.session_fork` and `POST /api/v1/sessions/{id}/fork`.

Acceptance: fork a 3-run session at every sequence k: the fork's events 1..k are the
source's (same types, data, provider, sequence numbers; new ids, no runs), event k+1 is
`session_forked`, the fork's transcript equals the source's up to k, and the source is
untouched. With a git workspace (a real repository edited by three runs): the fork's new
workspace holds exactly the source's snapshot nearest before k, and the source's workspace
is untouched. Also: the fork's first continuation run replays that transcript (it does not
resume the source's provider thread), bad `at_sequence` values write nothing, a hash
snapshot is recorded but not checked out, a failed checkout fails the whole fork.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from asm_core.errors import AsmError
from asm_core.records import RunRecord
from events.models import Event
from events.services import event_append
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    ProviderResult,
    RunContext,
)
from runs.providers.echo import EchoProvider
from runs.providers.registry import ProviderRegistry
from runs.store import DjangoSessionStore
from runs.transcript import Transcript, transcript_build
from sessions.fork import session_fork
from sessions.models import Session
from sessions.services import session_activate, session_create
from tests.unit.runs.test_continuation import Recording

OWNER = "fork-test"
CONFIG = ExecutorConfig(flush_interval_s=0.01, tick_s=0.01)


def bearer(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice")


def registry(*extra: Any) -> ProviderRegistry:
    reg = ProviderRegistry()
    reg.register(EchoProvider())
    for provider in extra:
        reg.register(provider)
    return reg


def execute(
    sid: uuid.UUID,
    prompt: str,
    *,
    provider: str = "echo",
    reg: ProviderRegistry | None = None,
    **options: Any,
) -> None:
    store = DjangoSessionStore()
    store.run_save(
        RunRecord(session_id=sid, provider=provider, input={"prompt": prompt}, options=options)
    )
    claimed = store.run_claim_next(sid, owner=OWNER, lease_ms=15_000)
    assert claimed is not None
    RunExecutor(store, reg or registry(), owner=OWNER, config=CONFIG).execute(claimed, claimed=True)


def three_runs(owner: User | None) -> uuid.UUID:
    session = session_create(
        agent_id="fork", owner=owner, context={"system_prompt": "Be kind."}, tags=["t"]
    )
    session_activate(session_id=session.id)
    execute(session.id, "first question")
    execute(
        session.id,
        "second question",
        adapter_opts={"tool_calls": [{"name": "ls", "input": {"d": "."}, "output": "a b"}]},
    )
    execute(session.id, "third question", adapter_opts={"chunk_words": 1})
    return session.id


def events_of(sid: uuid.UUID) -> list[dict[str, Any]]:
    rows = Event.objects.filter(session_id=sid).order_by("sequence_number").values()
    return [dict(row) for row in rows]


def plain(transcript: Transcript) -> list[dict[str, Any]]:
    """Messages without metadata (event ids and runs differ between source and fork)."""
    return [{k: v for k, v in m.items() if k != "metadata"} for m in transcript.messages]


def test_fork_at_every_sequence(alice: User) -> None:
    sid = three_runs(alice)
    source = Session.objects.get(id=sid)
    source_events = events_of(sid)
    source_row = Session.objects.filter(id=sid).values().get()
    assert len(source_events) == source.last_sequence > 20

    for k in range(source.last_sequence + 1):
        fork = session_fork(session_id=sid, at_sequence=k, actor=alice)
        copied = events_of(fork.id)
        assert len(copied) == k + 1
        for original, copy in zip(source_events[:k], copied[:k], strict=True):
            for key in ("sequence_number", "type", "data", "provider"):
                assert copy[key] == original[key]
            assert copy["id"] != original["id"]
            assert copy["run_id"] is None
            assert copy["metadata"]["forked_from"]["event_id"] == str(original["id"])
            assert copy["metadata"]["forked_from"]["run_id"] == (
                str(original["run_id"]) if original["run_id"] else None
            )
        forked = copied[-1]
        assert forked["type"] == "session_forked"
        assert forked["sequence_number"] == k + 1
        assert forked["data"] == {"source_session_id": str(sid), "at_sequence": k}
        assert forked["metadata"] == {"actor": f"user:{alice.pk}"}

        source_t = transcript_build(
            [e for e in DjangoSessionStore().event_list(sid) if e.sequence_number <= k],
            session_id=sid,
        )
        fork_t = transcript_build(DjangoSessionStore().event_list(fork.id), session_id=fork.id)
        assert plain(fork_t) == plain(source_t), k
        assert fork_t.starts == source_t.starts

    # the source is untouched
    assert events_of(sid) == source_events
    assert Session.objects.filter(id=sid).values().get() == source_row


def test_the_fork_session(alice: User) -> None:
    sid = three_runs(alice)
    Session.objects.filter(id=sid).update(
        metadata={
            "provider_session_id": "thread-1",
            "provider_session_ids": {"codex": "thread-1"},
            "codex_thread_usage": {"thread-1": {}},
            "claude_code": {"session_id": "x"},
            "team": "blue",
        }
    )
    fork = session_fork(session_id=sid, at_sequence=5)
    fork.refresh_from_db()
    assert fork.status == "pending"
    assert fork.owner_id == alice.pk
    assert fork.agent_id == "fork"
    assert fork.parent_session_id == sid
    assert fork.context == {"system_prompt": "Be kind."}
    assert fork.tags == ["t"]
    assert fork.last_sequence == 6
    assert fork.metadata == {
        "team": "blue",
        "forked_from": {"session_id": str(sid), "at_sequence": 5},
    }


def test_a_continuation_run_in_the_fork_replays_its_history(alice: User) -> None:
    sid = three_runs(alice)
    Session.objects.filter(id=sid).update(metadata={"provider_session_ids": {"recording": "t"}})
    second_run_end = (
        Event.objects.filter(session_id=sid, type="run_completed")
        .order_by("sequence_number")[1]
        .sequence_number
    )
    fork = session_fork(session_id=sid, at_sequence=second_run_end)
    rec = Recording()
    execute(fork.id, "in the fork", provider="recording", reg=registry(rec), continuation=True)
    [context] = rec.contexts
    assert context.provider_session_id is None  # the source's thread is not the fork's
    transcript = context.session_context["transcript"]
    assert [m["content"] for m in transcript] == [
        "first question",
        "first question",
        "second question",
        None,  # the ls call
        None,  # its result
        "second question",
    ]
    assert context.session_context["system_prompt"] == "Be kind."


@pytest.mark.parametrize("at", [-1, 10_000, True, "3", None])
def test_bad_at_sequence_writes_nothing(alice: User, at: Any) -> None:
    sid = three_runs(alice)
    sessions, events = Session.objects.count(), Event.objects.count()
    with pytest.raises(AsmError) as info:
        session_fork(session_id=sid, at_sequence=at)
    assert info.value.code == "validation_error"
    assert info.value.details["field"] == "at_sequence"
    assert (Session.objects.count(), Event.objects.count()) == (sessions, events)


@pytest.mark.django_db
def test_unknown_source() -> None:
    with pytest.raises(AsmError) as info:
        session_fork(session_id=uuid.uuid4(), at_sequence=0)
    assert info.value.code == "session_not_found"


class Writer:
    """A provider that edits the run's workspace as its prompt says (a stand-in agent):
    ``"write a.txt=one; delete b.txt"``."""

    name = "writer"

    def capabilities(self) -> list[Capability]:
        return [Capability(CapabilityType.FILE_ACCESS, "files")]

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        root = Path(context.options["workspace"]["path"])
        for step in context.messages[-1]["content"].split(";"):
            verb, _, arg = step.strip().partition(" ")
            if verb == "write":
                name, _, text = arg.partition("=")
                (root / name).write_text(text)
            elif verb == "delete":
                (root / arg).unlink()
        emit("message_received", {"content": "done", "role": "assistant"})
        return ProviderResult(output={"content": "done"}, token_usage={})

    def cancel(self, run_id: uuid.UUID) -> None:
        pass

    def validate_config(self) -> None:
        pass

    def validate_adapter_opts(self, opts: Any) -> None:
        pass


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def git_state(root: Path) -> tuple[str, ...]:
    return (
        git(root, "rev-parse", "HEAD"),
        git(root, "status", "--porcelain", "--untracked-files=all"),
        git(root, "for-each-ref"),
        git(root, "ls-files", "--stage"),
    )


def test_fork_checks_out_the_workspace_at_the_fork_point(
    alice: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASM_WORKSPACE_ROOTS", str(tmp_path))
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "--quiet", "-b", "main")
    (ws / "readme").write_text("hello")
    git(ws, "add", "readme")
    git(ws, "commit", "--quiet", "-m", "initial")

    session = session_create(agent_id="fork", owner=alice)
    session_activate(session_id=session.id)
    reg = registry(Writer())
    workspace = {"path": str(ws), "strategy": "git"}
    for prompt in ("write a.txt=one", "write a.txt=two; write b.txt=new", "delete a.txt"):
        execute(session.id, prompt, provider="writer", reg=reg, workspace=workspace)
    assert files(ws) == {"readme": "hello", "b.txt": "new"}
    source_state = git_state(ws)
    snapshots = list(
        Event.objects.filter(session_id=session.id, type="workspace_snapshot_taken")
        .order_by("sequence_number")
        .values_list("sequence_number", "data__label")
    )
    assert [label for _, label in snapshots] == ["before", "after"] * 3
    run2_before, run2_after = snapshots[2][0], snapshots[3][0]

    # just after run 2's `after` snapshot (and through run 2's end): run 2's result
    for k in (run2_after, run2_after + 1):
        fork = session_fork(session_id=session.id, at_sequence=k)
        done = fork.metadata["forked_from"]["workspace"]
        assert done["status"] == "checked_out"
        assert done["snapshot"]["sequence_number"] == run2_after
        assert fork.context["workspace_path"] == done["path"]
        assert files(Path(done["path"])) == {"readme": "hello", "a.txt": "two", "b.txt": "new"}
        assert Path(done["path"]).parent == tmp_path

    # at run 2's `before` snapshot: the state run 1 left
    fork = session_fork(session_id=session.id, at_sequence=run2_before)
    path = Path(fork.metadata["forked_from"]["workspace"]["path"])
    assert files(path) == {"readme": "hello", "a.txt": "one"}
    assert git(path, "rev-parse", "HEAD") == source_state[0]  # HEAD as it was

    # before any snapshot: no workspace of its own
    early = session_fork(session_id=session.id, at_sequence=snapshots[0][0] - 1)
    assert "workspace" not in early.metadata["forked_from"]
    assert "workspace_path" not in early.context

    # the source workspace is untouched
    assert files(ws) == {"readme": "hello", "b.txt": "new"}
    assert git_state(ws) == source_state


def test_a_hash_snapshot_is_not_checked_out(alice: User) -> None:
    sid = three_runs(alice)
    snap = event_append(
        session_id=sid,
        type="workspace_snapshot_taken",
        data={"label": "after", "backend": "hash", "ref": "abc123", "path": "/srv/ws/a"},
    )
    fork = session_fork(session_id=sid, at_sequence=snap.sequence_number)
    workspace = fork.metadata["forked_from"]["workspace"]
    assert workspace["snapshot"]["ref"] == "abc123"
    assert workspace["source_path"] == "/srv/ws/a"
    assert workspace["status"] == "not_checked_out"
    assert "hash" in workspace["reason"]
    assert events_of(fork.id)[-1]["data"]["workspace"] == workspace


def test_a_failed_checkout_fails_the_fork(alice: User, tmp_path: Path) -> None:
    sid = three_runs(alice)
    not_git = tmp_path / "plain"
    not_git.mkdir()
    snap = event_append(
        session_id=sid,
        type="workspace_snapshot_taken",
        data={"label": "after", "backend": "git", "ref": "0" * 40, "path": str(not_git)},
    )
    sessions = Session.objects.count()
    with pytest.raises(AsmError) as info:
        session_fork(session_id=sid, at_sequence=snap.sequence_number)
    assert info.value.code == "invalid_operation"
    assert Session.objects.count() == sessions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


# --------------------------------------------------------------------------- the API


def test_api(alice: User) -> None:
    sid = three_runs(alice)
    api = bearer(alice)
    url = f"/api/v1/sessions/{sid}/fork"
    response = api.post(url, {"at_sequence": 4}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["parent_session_id"] == str(sid)
    assert body["status"] == "pending"
    assert body["last_sequence"] == 5
    assert body["owner_id"] == alice.pk
    assert api.get(f"/api/v1/sessions/{body['id']}").status_code == 200

    last = Session.objects.get(id=sid).last_sequence
    past = api.post(url, {"at_sequence": last + 1}, format="json")
    assert past.status_code == 400
    assert past.json()["error"]["code"] == "validation_error"
    assert past.json()["error"]["details"]["field"] == "at_sequence"
    assert api.post(url, {}, format="json").status_code == 400
    assert api.post(url, {"at_sequence": -1}, format="json").status_code == 400

    bob = bearer(User.objects.create_user("bob"))
    assert bob.post(url, {"at_sequence": 1}, format="json").status_code == 404
    assert APIClient().post(url, {"at_sequence": 1}, format="json").status_code == 401
