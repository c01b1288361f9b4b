"""Policy (spec 10): a run breaching a limit is stopped and reported.

Runs a prompt with `options.policy.limits.max_output_tokens` set below what the reply
needs; the run records a `policy_violation` event and ends failed with `policy_violation`.
    python examples/policy.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from events.selectors import event_list
    from runs.services import run_once

    policy = {"limits": {"max_output_tokens": 2}, "on_violation": "cancel"}
    prompt = "Please reply with at least ten words of text."
    say(f"run_once(input={prompt!r}, options={{'policy': {policy}}})")
    result = run_once(
        input=prompt, provider=args.provider, options={"policy": policy}, timeout_s=args.timeout
    )
    say(f"status={result['status']} error={result['error']}")
    violations = event_list(session_id=result["session_id"], types="policy_violation")
    for event in violations:
        say(f"  {event.sequence_number}: policy_violation {event.data}")
    check(violations, "a policy_violation event was recorded")
    check(result["status"] == "failed", f"the run should fail, it ended {result['status']}")
    check(
        (result["error"] or {}).get("code") == "policy_violation", "the error is policy_violation"
    )
    say("OK: policy")


if __name__ == "__main__":
    main()
