#!/usr/bin/env python3
"""A fake ``amp`` CLI for the amp provider's tests: strict argv, scripted stream-json output.

Run it as the ``amp`` binary (tests put a wrapper script that execs it with the test's own
interpreter: ``write_fake_amp``). It accepts exactly the command lines of the real CLI the
adapter may build (provider-protocols.md section 3, checked against amp 0.0.1790142911):

    amp [threads continue <T-uuid>] (--execute=<msg> | --execute <msg> | -x <msg>)
        --stream-json [--dangerously-allow-all] [--mode|-m <mode>] [--settings-file <path>]
        [--label|-l <label>]...

Anything else (unknown flag, missing ``--stream-json``, missing or empty message, a separate
message that starts with ``-`` which the real parser reads as an option, a bad thread id, a
repeated flag) prints ``Error: ...`` on stderr and exits 2. Without ``AMP_API_KEY`` in its
environment it prints the real CLI's "Invalid or missing API key" line and exits 1.

Environment (the scenario):

- ``FAKE_AMP_SCRIPT``: a JSONL file whose lines are printed to stdout, one flush each.
- ``FAKE_AMP_DELAY_MS``: pause before each line (default 2).
- ``FAKE_AMP_ARGV_LOG``: a file to which one JSON line is appended per invocation:
  ``{"argv", "cwd", "pid", "env_keys", "env"}`` (``env``: the AMP_* variables' values).
- ``FAKE_AMP_STDERR``: text written to stderr after the script.
- ``FAKE_AMP_EXIT``: the exit code after the script (default 0).
- ``FAKE_AMP_HANG=1``: after the script, start a child ``sleep`` (its pid is written to
  ``FAKE_AMP_CHILD_PID_FILE`` when set) and sleep until killed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import NoReturn

THREAD_ID = re.compile(
    r"^T-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def parse(argv: list[str]) -> dict[str, object]:
    """Check argv like the real CLI's parser; return what it asked for."""
    seen: dict[str, object] = {"labels": []}
    args = list(argv)
    if args[:2] == ["threads", "continue"]:
        if len(args) < 3 or not THREAD_ID.match(args[2]):
            fail(f"threads continue needs a thread id T-<uuid>, got {args[2:3]!r}")
        seen["thread"] = args[2]
        args = args[3:]
    elif args and not args[0].startswith("-"):
        fail(f"unknown command {args[0]!r}")

    def value(flag: str) -> str:
        if not args or args[0].startswith("-"):
            fail(f"option '{flag}' argument missing")
        return args.pop(0)

    def once(key: str) -> None:
        if key in seen:
            fail(f"option for {key} given twice")

    while args:
        arg = args.pop(0)
        if arg.startswith("--execute="):
            once("message")
            seen["message"] = arg[len("--execute=") :]
        elif arg in ("--execute", "-x"):
            once("message")
            # the message is optional: a following option is parsed as an option
            seen["message"] = args.pop(0) if args and not args[0].startswith("-") else ""
        elif arg == "--stream-json":
            once("stream_json")
            seen["stream_json"] = True
        elif arg == "--dangerously-allow-all":
            once("dangerously_allow_all")
            seen["dangerously_allow_all"] = True
        elif arg in ("--mode", "-m"):
            once("mode")
            seen["mode"] = value(arg)
        elif arg == "--settings-file":
            once("settings_file")
            seen["settings_file"] = value(arg)
        elif arg in ("--label", "-l"):
            labels = seen["labels"]
            assert isinstance(labels, list)
            labels.append(value(arg))
        else:
            fail(f"error: unknown option '{arg}'")
    if not seen.get("message"):  # stdin is /dev/null under the adapter
        fail("User message must be provided through stdin or as argument when using execute mode")
    if not seen.get("stream_json"):
        fail("the fake amp only speaks --stream-json")
    return seen


def main() -> None:
    argv = sys.argv[1:]
    log = os.environ.get("FAKE_AMP_ARGV_LOG")
    if log:
        record = {
            "argv": argv,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "env_keys": sorted(os.environ),
            "env": {k: v for k, v in os.environ.items() if k.startswith("AMP_")},
        }
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    parse(argv)
    if not os.environ.get("AMP_API_KEY"):
        fail("Invalid or missing API key. Run 'amp login' to authenticate.", 1)

    delay = float(os.environ.get("FAKE_AMP_DELAY_MS", "2")) / 1000
    script = os.environ.get("FAKE_AMP_SCRIPT")
    if script:
        with open(script, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                if delay > 0:
                    time.sleep(delay)
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
                sys.stdout.flush()

    if os.environ.get("FAKE_AMP_HANG") == "1":
        child = subprocess.Popen(["sleep", "300"])
        pid_file = os.environ.get("FAKE_AMP_CHILD_PID_FILE")
        if pid_file:
            with open(pid_file, "w", encoding="utf-8") as f:
                f.write(str(child.pid))
        while True:
            time.sleep(1)

    stderr = os.environ.get("FAKE_AMP_STDERR")
    if stderr:
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
        sys.stderr.flush()
    sys.exit(int(os.environ.get("FAKE_AMP_EXIT", "0")))


if __name__ == "__main__":
    main()
