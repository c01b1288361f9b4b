"""Routing (spec 8): the `router` provider picks a provider per run and records why.

Submits a run to `router` preferring the chosen provider (echo by default); the run's
metadata `routing` names the provider used and the attempts made.
    python examples/routing.py [--provider claude]
"""

from __future__ import annotations

from _asm_example import check, echo_opts, say, setup


def main() -> None:
    args = setup(__doc__ or "")
    from runs.services import run_once

    options = {"routing": {"prefer": [args.provider], "max_attempts": 2}}
    options.update(echo_opts(args.provider, delay_ms=1))
    say(f"run_once(provider='router', options={options})")
    result = run_once(input="Route me.", provider="router", options=options, timeout_s=args.timeout)
    routing = result["routing"] or {}
    say(f"status={result['status']} routing={routing}")
    check(result["status"] == "completed", f"the run ended {result['status']}: {result['error']}")
    check(routing, "the run's metadata records the routing decision")
    check(routing.get("routed_provider") == args.provider, f"{args.provider} was used")
    say("OK: routing")


if __name__ == "__main__":
    main()
