"""One-shot (spec 5.6): `run_once` creates a session, runs one prompt, waits, finishes it.

Prints the reply, the status, token usage and the event count; exits 1 unless completed.
    python examples/one_shot.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from runs.services import run_once
    from sessions.models import Session

    prompt = "Say hello to asm in five words."
    say(f"run_once(input={prompt!r}, provider={args.provider!r})")
    result = run_once(input=prompt, provider=args.provider, timeout_s=args.timeout)
    say(f"status={result['status']} events={result['events_count']}")
    say(f"reply: {(result['output'] or {}).get('content')!r}")
    say(f"usage: {result['token_usage']}")
    check(result["status"] == "completed", f"the run ended {result['status']}: {result['error']}")
    if args.provider == "echo":
        check((result["output"] or {}).get("content") == prompt, "echo replies with the prompt")
    session = Session.objects.get(id=result["session_id"])
    check(session.status == "completed", f"the session is {session.status}, not completed")
    say("OK: one_shot")


if __name__ == "__main__":
    main()
