"""Follow a stream (spec 5.8): `events_follow` yields events as the worker appends them.

Submits a slowly streamed run and follows the session from sequence 0, printing each chunk
as it arrives, until the run's terminal event.
    python examples/follow_stream.py [--provider claude]
"""

from __future__ import annotations

import time

from _asm_example import check, echo_opts, say, setup

TERMINAL = {"run_completed", "run_failed", "run_cancelled", "run_timeout"}


def main() -> None:
    args = setup(__doc__ or "")
    from events.selectors import events_follow
    from runs.services import run_submit
    from sessions.services import session_create

    session = session_create(agent_id="example-follow")
    run = run_submit(
        session_id=session.id,
        input={"prompt": "streamed word by word as it is produced"},
        provider=args.provider,
        options=echo_opts(args.provider, delay_ms=30),
    ).run
    say(f"following session {session.id} (run {run.id})")
    deadline = time.monotonic() + args.timeout
    chunks: list[str] = []
    last_type = ""
    for event in events_follow(session_id=session.id, after=0, poll_interval_s=0.05):
        check(time.monotonic() < deadline, "the run did not finish in time")
        if event.type == "message_streamed":
            chunk = str(event.data.get("content") or event.data.get("delta") or "")
            chunks.append(chunk)
            say(f"  {event.sequence_number:>3} chunk {chunk!r}")
        else:
            say(f"  {event.sequence_number:>3} {event.type}")
        last_type = event.type
        if event.run_id == run.id and event.type in TERMINAL:
            break
    check(last_type == "run_completed", f"the run ended with {last_type}")
    check(len(chunks) >= 2, "the reply arrived in several chunks")
    say("OK: follow_stream")


if __name__ == "__main__":
    main()
