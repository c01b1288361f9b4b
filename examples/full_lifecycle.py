"""Full lifecycle (spec 5): create a session, submit two runs, pause/resume, complete it.

Walks pending -> active -> paused -> active -> completed, queues two runs (they execute one
at a time in submission order), then prints the session's event log.
    python examples/full_lifecycle.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, echo_opts, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from events.selectors import event_list
    from runs.services import run_submit, run_wait
    from sessions.models import Session
    from sessions.services import session_complete, session_create, session_pause, session_resume

    session = session_create(agent_id="example-lifecycle", context={"purpose": "example"})
    say(f"session {session.id} created: {session.status}")
    check(session.status == "pending", "a new session is pending")

    runs = [
        run_submit(
            session_id=session.id,
            input={"prompt": prompt},
            provider=args.provider,
            options=echo_opts(args.provider, delay_ms=1),
        ).run
        for prompt in ("First question.", "Second question.")
    ]
    say(f"submitted runs {[str(r.id) for r in runs]}")
    done = [run_wait(run_id=r.id, timeout_s=args.timeout) for r in runs]
    for run in done:
        say(f"run {run.id}: {run.status} -> {(run.output or {}).get('content')!r}")
        check(run.status == "completed", f"run {run.id} ended {run.status}: {run.error}")
    check(
        done[0].ended_at is not None
        and done[1].started_at is not None
        and done[0].ended_at <= done[1].started_at,
        "runs of one session execute one after the other",
    )

    for step in (session_pause, session_resume, session_complete):
        session = step(session_id=session.id)
        say(f"{step.__name__}: {session.status}")
    check(Session.objects.get(id=session.id).status == "completed", "the session completed")

    events = event_list(session_id=session.id)
    say("events: " + ", ".join(f"{e.sequence_number}:{e.type}" for e in events))
    seqs = [e.sequence_number for e in events]
    check(seqs == list(range(1, len(seqs) + 1)), "sequence numbers are gapless from 1")
    types = [e.type for e in events]
    for expected in ("session_started", "session_paused", "session_resumed", "session_completed"):
        check(expected in types, f"the log has {expected}")
    check(types.count("run_completed") == 2, "two run_completed events")
    say("OK: full_lifecycle")


if __name__ == "__main__":
    main()
