"""Continuity (spec 6): a later run sees the session's earlier conversation.

Two runs in one session, the second with `options.continuation`; the session's transcript
(built from the event log) then holds both turns in order.
    python examples/continuity.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from runs.services import run_submit, run_wait
    from runs.store import DjangoSessionStore
    from runs.transcript import transcript_from_store
    from sessions.services import session_create

    session = session_create(agent_id="example-continuity")
    prompts = ["My name is Ada.", "What is my name?"]
    for i, prompt in enumerate(prompts):
        options = {"continuation": True} if i else {}
        run = run_submit(
            session_id=session.id, input={"prompt": prompt}, provider=args.provider, options=options
        ).run
        run = run_wait(run_id=run.id, timeout_s=args.timeout)
        say(f"run {i + 1} {options}: {run.status} -> {(run.output or {}).get('content')!r}")
        check(run.status == "completed", f"run {i + 1} ended {run.status}: {run.error}")

    transcript = transcript_from_store(DjangoSessionStore(), session.id)
    for message in transcript.messages:
        say(f"  {message['role']:>9}: {message['content']!r}")
    roles = [m["role"] for m in transcript.messages]
    check(roles == ["user", "assistant", "user", "assistant"], f"two turns, got {roles}")
    check(transcript.messages[0]["content"] == prompts[0], "the first turn comes first")
    check(transcript.messages[2]["content"] == prompts[1], "the second turn follows")
    say("OK: continuity")


if __name__ == "__main__":
    main()
