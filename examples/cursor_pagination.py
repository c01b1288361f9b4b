"""Cursor pagination (spec 5.7): read a session's log page by page with `after` + `limit`.

Produces a run with many streamed chunks, then walks the log in pages of 5, resuming each
page after the last sequence number seen, and checks nothing is missed or repeated.
    python examples/cursor_pagination.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, echo_opts, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from events.selectors import event_list, latest_sequence
    from runs.services import run_once

    prompt = "one two three four five six seven eight nine ten eleven twelve"
    result = run_once(
        input=prompt,
        provider=args.provider,
        timeout_s=args.timeout,
        options=echo_opts(args.provider),
    )
    check(result["status"] == "completed", f"the run ended {result['status']}: {result['error']}")
    session_id = result["session_id"]
    last = latest_sequence(session_id=session_id)
    say(f"session {session_id}: {last} events")

    seen: list[int] = []
    cursor, page_no = 0, 0
    while True:
        page = event_list(session_id=session_id, after=cursor, limit=5)
        if not page:
            break
        page_no += 1
        say(
            f"page {page_no} (after={cursor}): "
            + ", ".join(f"{e.sequence_number}:{e.type}" for e in page)
        )
        seen += [e.sequence_number for e in page]
        cursor = page[-1].sequence_number
    check(seen == list(range(1, last + 1)), f"every event read once, in order: {seen}")
    check(page_no >= 2, "more than one page was needed")

    streamed = event_list(session_id=session_id, types="message_streamed", limit=3)
    say(f"filtered by type: {[e.sequence_number for e in streamed]}")
    check(all(e.type == "message_streamed" for e in streamed), "the type filter holds")
    say("OK: cursor_pagination")


if __name__ == "__main__":
    main()
