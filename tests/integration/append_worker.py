"""A separate OS process that appends events to one session (for the concurrency tests).

Usage: python -m tests.integration.append_worker SESSION_ID --count N [--ids FILE] [--seed S]
Environment: DATABASE_URL (the test database) and DJANGO_SETTINGS_MODULE.
It sets Django up, prints "ready", waits for one line on stdin (the start signal, so all
workers start together), appends, then prints one JSON line: [[event_id, sequence], ...].
With --ids it appends exactly those event ids (one per line) instead of fresh ones.
Appends mix `event_append` and `event_append_many` (batches of 2..25) at random.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("session_id", type=uuid.UUID)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--ids", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--singles-only", action="store_true")
    args = parser.parse_args()

    django.setup()
    from events.services import NewEvent, event_append, event_append_many

    ids: list[uuid.UUID | None]
    if args.ids:
        with open(args.ids, encoding="utf-8") as fh:
            ids = [uuid.UUID(line.strip()) for line in fh if line.strip()]
    else:
        ids = [None] * args.count
    rng = random.Random(args.seed)

    print("ready", flush=True)
    sys.stdin.readline()

    out: list[tuple[str, int]] = []
    i = 0
    while i < len(ids):
        if args.singles_only or rng.random() < 0.5:
            e = event_append(
                session_id=args.session_id,
                type="message_streamed",
                data={"delta": f"w{i}"},
                event_id=ids[i],
            )
            out.append((str(e.id), e.sequence_number))
            i += 1
        else:
            n = min(rng.randint(2, 25), len(ids) - i)
            batch = [
                NewEvent(type="message_streamed", data={"delta": f"w{i + j}"}, id=ids[i + j])
                for j in range(n)
            ]
            out.extend(
                (str(e.id), e.sequence_number)
                for e in event_append_many(session_id=args.session_id, events=batch)
            )
            i += n
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
