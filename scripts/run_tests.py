"""Run asm's two test tiers: the unit tier (SQLite, in-memory), then the integration tier.

The integration tier uses DATABASE_URL / REDIS_URL when they are set (and checks that both
answer); otherwise it starts a throwaway PostgreSQL and Redis in a temporary directory on free
loopback ports and stops them afterwards, also on Ctrl-C. Stdlib only.

    python scripts/run_tests.py [--unit-only | --integration-only] [pytest args ...]

Arguments this script does not know (or everything after `--`) are passed to pytest in both
tiers. pytest's exit code 5 (no tests collected) counts as a failure in both tiers.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
UNIT_MARKERS = "not integration and not live"
INTEGRATION_MARKERS = "(integration or contract) and not live"
INSTALL_HINT = "Debian: apt-get install postgresql redis-server"


class SetupError(Exception):
    """A service could not be found, started or reached; the message says what to do."""


def say(message: str) -> None:
    print(f"[run_tests] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# --------------------------------------------------------------------------- readiness checks
def check_postgres(url: str) -> None:
    """pg_isready-like: send an SSLRequest and expect PostgreSQL's one-byte answer (S or N)."""
    parts = urlsplit(url)
    host, port = unquote(parts.hostname or "127.0.0.1"), parts.port or 5432
    try:
        if host.startswith("/"):  # a unix socket directory (postgres://user@%2Fvar%2Frun/db)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port), timeout=5)
        with sock:
            sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            answer = sock.recv(1)
    except OSError as exc:
        raise SetupError(f"PostgreSQL at {redacted(url)} does not answer: {exc}") from exc
    if answer not in (b"S", b"N"):
        raise SetupError(f"{redacted(url)} answered, but not like PostgreSQL ({answer!r})")


def check_redis(url: str) -> None:
    """Send PING (after AUTH when the URL has a password) over a raw socket; expect +PONG."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    commands = []
    if parts.password:
        auth = [unquote(parts.username)] if parts.username else []
        commands.append(["AUTH", *auth, unquote(parts.password)])
    commands.append(["PING"])
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            sock = raw
            if parts.scheme == "rediss":
                import ssl

                sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            for command in commands:
                payload = f"*{len(command)}\r\n" + "".join(
                    f"${len(arg.encode())}\r\n{arg}\r\n" for arg in command
                )
                sock.sendall(payload.encode())
                reply = sock.recv(256).decode(errors="replace").strip()
                if reply.startswith("-"):
                    raise SetupError(f"Redis at {redacted(url)} refused {command[0]}: {reply}")
    except OSError as exc:
        raise SetupError(f"Redis at {redacted(url)} does not answer: {exc}") from exc
    if reply != "+PONG":
        raise SetupError(f"{redacted(url)} answered PING with {reply!r}, not +PONG")


# --------------------------------------------------------------------------- throwaway servers
def find_pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    versions.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return versions[-1] if versions else None


def start_postgres(stack: ExitStack, tmp: Path, initdb: str, pg_ctl: str) -> str:
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:  # postgres refuses to run as root: hand it the temporary directory
        if not shutil.which("runuser"):
            raise SetupError("running as root needs `runuser` (util-linux) to start postgres")
        shutil.chown(tmp, user="postgres")
    data, sockets, log = tmp / "pgdata", tmp / "pgsock", tmp / "postgres.log"
    sockets.mkdir()
    if as_postgres:
        shutil.chown(sockets, user="postgres")
    port = free_port()

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_postgres, *args], cwd=tmp, capture_output=True, text=True, check=False
        )

    done = pg(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    if done.returncode != 0:
        raise SetupError(f"initdb failed:\n{done.stdout}{done.stderr}")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {shlex.quote(str(sockets))} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    # Registered before the start so that a half-started server is stopped too.
    stack.callback(lambda: pg(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"))
    done = pg(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SetupError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}{tail}")
    url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    check_postgres(url)
    return url


def start_redis(stack: ExitStack, tmp: Path, redis_server: str) -> str:
    port = free_port()
    log = (tmp / "redis.log").open("w")
    stack.callback(log.close)
    args = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(tmp), "--daemonize", "no"]
    # Own session: Ctrl-C reaches this script, which then stops the server in order.
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            check_redis(url)
            return url
        except SetupError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"redis-server did not start; see {tmp / 'redis.log'}") from None
            time.sleep(0.1)


def preflight() -> None:
    """Fail before starting anything when a service has neither a URL nor a binary."""
    problems = []
    if not os.environ.get("DATABASE_URL") and not (find_pg_bin("initdb") and find_pg_bin("pg_ctl")):
        problems.append(
            "PostgreSQL: set DATABASE_URL=postgres://USER@HOST:PORT/DB, "
            f"or install initdb and pg_ctl ({INSTALL_HINT})"
        )
    if not os.environ.get("REDIS_URL") and not shutil.which("redis-server"):
        problems.append(
            f"Redis: set REDIS_URL=redis://HOST:PORT/0, or install redis-server ({INSTALL_HINT})"
        )
    if problems:
        raise SetupError("the integration tier has no services:\n  " + "\n  ".join(problems))


def postgres_url(stack: ExitStack, tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        check_postgres(url)
        say(f"PostgreSQL: from DATABASE_URL, {redacted(url)}")
        return url
    initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise SetupError(f"initdb/pg_ctl not found ({INSTALL_HINT})")
    url = start_postgres(stack, tmp, initdb, pg_ctl)
    say(f"PostgreSQL: throwaway server ({Path(initdb).parent}) at {url}, data in {tmp}")
    return url


def redis_url(stack: ExitStack, tmp: Path) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        check_redis(url)
        say(f"Redis: from REDIS_URL, {redacted(url)}")
        return url
    redis_server = shutil.which("redis-server")
    if not redis_server:
        raise SetupError(f"redis-server not found ({INSTALL_HINT})")
    url = start_redis(stack, tmp, redis_server)
    say(f"Redis: throwaway server ({redis_server}) at {url}")
    return url


# --------------------------------------------------------------------------- tiers
def pytest(tier: str, markers: str, env: dict[str, str], extra: list[str]) -> bool:
    command = [sys.executable, "-m", "pytest", "-m", markers, *extra]
    say(f"{tier} tier: {shlex.join(command)}")
    code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    say(f"{tier} tier: {'passed' if code == 0 else f'FAILED (pytest exit code {code})'}")
    return code == 0  # 5 (no tests collected) is a failure too


def run_unit(extra: list[str]) -> bool:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "ASM_REQUIRE_SERVICES")
    }
    return pytest("unit", UNIT_MARKERS, env, extra)


def run_integration(extra: list[str]) -> bool:
    with ExitStack() as stack:
        try:
            preflight()
            # Servers started below are stopped (and this directory removed) when the
            # stack closes: normally, on a failure, on Ctrl-C and on SIGTERM.
            tmp = Path(tempfile.mkdtemp(prefix="asm-tests-"))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            services = {
                "DATABASE_URL": postgres_url(stack, tmp),
                "REDIS_URL": redis_url(stack, tmp),
            }
        except SetupError as exc:
            say(f"integration tier: FAILED before pytest: {exc}")
            return False
        env = {**os.environ, **services, "ASM_REQUIRE_SERVICES": "1"}
        return pytest("integration", INTEGRATION_MARKERS, env, extra)


def main(argv: list[str]) -> int:
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Other arguments (and all after --) go to pytest in both tiers.",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--unit-only", action="store_true", help="run only the unit tier")
    only.add_argument(
        "--integration-only", action="store_true", help="run only the integration tier"
    )
    args, extra = parser.parse_known_args(argv)
    extra += passthrough

    # SIGTERM (e.g. CI ending the run) unwinds like Ctrl-C, so throwaway servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, bool] = {}
    try:
        if not args.integration_only:
            results["unit"] = run_unit(extra)
        if not args.unit_only:
            results["integration"] = run_integration(extra)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    say("summary: " + ", ".join(f"{t} {'ok' if ok else 'FAILED'}" for t, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
