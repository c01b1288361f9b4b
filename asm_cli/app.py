"""The `asm` command (click + rich): run prompts, follow sessions, list and cancel.

Invariants: the backend is chosen once per command (`ASM_URL` + `ASM_TOKEN`, else embedded:
`asm_cli.embedded`). `asm run` follows the run's events by cursor (`after`), so every event
is rendered once and in sequence order; it ends when the run is terminal and every event
up to its terminal event has been shown. Ctrl-C during `asm run` cancels the run, waits for
it to end and says so (exit status 130). `--json` prints one JSON object per line (events,
then the final run) and nothing else. Exit status: 0 for a completed run, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asm_cli.client import Backend, CliError, backend_open

TERMINAL = {"completed", "failed", "cancelled", "timeout"}
RUN_END_EVENTS = {"run_completed", "run_failed", "run_cancelled", "run_timeout"}
POLL_S = 0.05

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _backend() -> Backend:
    return backend_open(os.environ.get("ASM_URL") or None, os.environ.get("ASM_TOKEN") or None)


def _fail(exc: CliError) -> None:
    err_console.print(f"[red]error[/red] {exc.code}: {exc.message}", markup=True)
    sys.exit(2)


def _follow(
    backend: Backend, session_id: str, *, after: int, run_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """Events of the session (only `run_id`'s when given) after `after`, endlessly."""
    cursor = after
    while True:
        page = backend.event_page(session_id=session_id, after=cursor, run_id=run_id)
        if not page:
            time.sleep(POLL_S)
            continue
        yield from page
        cursor = int(page[-1]["sequence_number"])


class Renderer:
    """Human rendering of events: streamed text inline, everything else on its own line."""

    def __init__(self) -> None:
        self.mid_line = False
        self.streamed = False

    def _line(self, text: str) -> None:
        if self.mid_line:
            console.print()
            self.mid_line = False
        console.print(text, markup=True, soft_wrap=True)

    def event(self, event: dict[str, Any]) -> None:
        kind, data = event["type"], event.get("data") or {}
        if kind == "message_streamed":
            console.print(str(data.get("delta", "")), end="", markup=False, soft_wrap=True)
            self.mid_line = self.streamed = True
        elif kind == "message_received":
            if not self.streamed and data.get("content"):
                console.print(str(data["content"]), markup=False)
            self.finish()
            self.streamed = False
        elif kind == "tool_call_started":
            name, given = _e(data.get("tool_name", "?")), _short(data.get("tool_input"))
            self._line(f"[cyan]→ tool[/cyan] {name} {given}")
        elif kind == "tool_call_failed":
            self._line(
                f"[red]✗ tool[/red] {_e(data.get('tool_name', ''))} {_short(data.get('error'))}"
            )
        elif kind == "tool_call_completed":
            name, got = _e(data.get("tool_name", "")), _short(data.get("tool_output"))
            self._line(f"[cyan]← tool[/cyan] {name} {got}")
        elif kind == "token_usage_updated":
            self._line(
                f"[dim]usage: {data.get('input_tokens', 0)} in / "
                f"{data.get('output_tokens', 0)} out[/dim]"
            )
        elif kind in ("run_failed", "run_timeout"):
            error = data.get("error") or data
            self._line(f"[red]{kind}[/red] {_short(error)}")
        elif kind == "message_sent":
            self._line(f"[bold]you[/bold] {_short(data.get('content'))}")
        elif kind in ("run_started", "run_completed", "run_cancelled", "session_created"):
            self._line(f"[dim]{kind}[/dim]")
        else:
            self._line(f"[dim]{kind} {_short(data)}[/dim]")

    def finish(self) -> None:
        if self.mid_line:
            console.print()
            self.mid_line = False


def _e(value: Any) -> str:
    return escape(str(value))


def _short(value: Any, limit: int = 120) -> str:
    """`value` as one line of at most `limit` characters, escaped for rich markup."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _duration(run: dict[str, Any], fallback_s: float) -> float:
    try:
        started = datetime.fromisoformat(str(run["started_at"]).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(str(run["ended_at"]).replace("Z", "+00:00"))
        return (ended - started).total_seconds()
    except (KeyError, TypeError, ValueError):
        return fallback_s


def _summary(run: dict[str, Any], elapsed_s: float) -> str:
    usage = run.get("token_usage") or {}
    cost = run.get("cost_usd")
    cost_text = "n/a" if cost is None else f"${float(cost):.6f}"
    colour = "green" if run["status"] == "completed" else "red"
    parts = [
        f"[{colour}]{run['status']}[/{colour}]",
        f"tokens {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out",
        f"cost {cost_text}",
        f"{_duration(run, elapsed_s):.2f}s",
        f"run {run['id']}",
    ]
    if run.get("error"):
        parts.append(f"error {run['error'].get('code')}")
    return " · ".join(parts)


def _wait_terminal(backend: Backend, run_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    run = backend.run_get(run_id=run_id)
    while run["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(POLL_S)
        run = backend.run_get(run_id=run_id)
    return run


def _run_follow(
    backend: Backend, run: dict[str, Any], *, after: int, as_json: bool, started: float
) -> int:
    renderer = Renderer()
    status = None if as_json else console.status("waiting for the run to start…")
    if status is not None:
        status.start()
    try:
        for event in _follow(backend, run["session_id"], after=after, run_id=run["id"]):
            if status is not None:
                status.stop()
                status = None
            if as_json:
                click.echo(json.dumps(event))
            else:
                renderer.event(event)
            if event["type"] in RUN_END_EVENTS:
                break
    finally:
        if status is not None:
            status.stop()
    renderer.finish()
    final = _wait_terminal(backend, run["id"], 10.0)
    if as_json:
        click.echo(json.dumps(final))
    else:
        console.print(_summary(final, time.monotonic() - started), markup=True, soft_wrap=True)
    return 0 if final["status"] == "completed" else 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """asm, the Agent Session Manager: run prompts and watch sessions.

    Talks to ASM_URL (with ASM_TOKEN) or, when ASM_URL is unset, runs embedded.
    """


@cli.command()
@click.argument("prompt")
@click.option("--provider", "-p", default=None, help="Provider name (default: the server's).")
@click.option("--session", "session_id", default=None, help="Run in this session.")
@click.option("--continue", "cont", is_flag=True, help="Run in the most recent session.")
@click.option("--agent", default="cli", show_default=True, help="Agent id of a new session.")
@click.option("--adapter-opts", default=None, help="options.adapter_opts as a JSON object.")
@click.option("--options", "options_json", default=None, help="Run options as a JSON object.")
@click.option(
    "--policy",
    "policy_file",
    type=click.File("r"),
    default=None,
    help="A policy (JSON file) for this run: options.policy (docs/policies.md).",
)
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=None,
    help="Record the run's file changes in this directory: options.workspace.path.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead.")
def run(
    prompt: str,
    provider: str | None,
    session_id: str | None,
    cont: bool,
    agent: str,
    adapter_opts: str | None,
    options_json: str | None,
    policy_file: TextIO | None,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Submit PROMPT as a run and render its events live (Ctrl-C cancels it)."""
    try:
        options: dict[str, Any] = json.loads(options_json) if options_json else {}
        if adapter_opts:
            options["adapter_opts"] = json.loads(adapter_opts)
        if policy_file is not None:
            options["policy"] = json.load(policy_file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if workspace:
        options["workspace"] = {**options.get("workspace", {}), "path": workspace}
    if session_id and cont:
        raise click.UsageError("--session and --continue exclude each other")
    started = time.monotonic()
    backend = _backend()
    code = 0
    try:
        if cont:
            latest = backend.session_latest()
            if latest is None:
                raise CliError("session_not_found", "No session to continue")
            session_id = latest["id"]
        if not session_id:
            session_id = backend.session_create(agent_id=agent)["id"]
        run_ = backend.run_submit(
            session_id=session_id, prompt=prompt, provider=provider, options=options
        )
        if not as_json:
            console.print(
                f"[dim]session {session_id} · run {run_['id']}[/dim]", markup=True, soft_wrap=True
            )
        try:
            code = _run_follow(backend, run_, after=0, as_json=as_json, started=started)
        except KeyboardInterrupt:
            console.print()
            console.print(f"[yellow]Cancelling run {run_['id']}…[/yellow]", markup=True)
            backend.run_cancel(run_id=run_["id"])
            final = _wait_terminal(backend, run_["id"], 15.0)
            if as_json:
                click.echo(json.dumps(final))
            console.print(
                f"[yellow]Run {run_['id']} {final['status']} (Ctrl-C).[/yellow]",
                markup=True,
                soft_wrap=True,
            )
            code = 130
    except CliError as exc:
        _fail(exc)
    finally:
        backend.close()
    sys.exit(code)


@cli.command()
@click.argument("session_id")
@click.option("--after", default=0, show_default=True, help="Start after this sequence.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead.")
def tail(session_id: str, after: int, as_json: bool) -> None:
    """Follow SESSION_ID's events (Ctrl-C stops)."""
    backend = _backend()
    renderer = Renderer()
    try:
        for event in _follow(backend, session_id, after=after):
            if as_json:
                click.echo(json.dumps(event))
            else:
                renderer.event(event)
    except KeyboardInterrupt:
        renderer.finish()
    except CliError as exc:
        _fail(exc)
    finally:
        backend.close()


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        # Ids are what the other commands take: never cut them.
        is_id = column == "id"
        table.add_column(column, no_wrap=is_id, min_width=36 if is_id else None)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


def _listing(fetch: Any, as_json: bool, render: Any) -> None:
    backend = _backend()
    try:
        items = fetch(backend)
    except CliError as exc:
        _fail(exc)
        return
    finally:
        backend.close()
    if as_json:
        for item in items:
            click.echo(json.dumps(item))
    else:
        render(items)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead.")
def sessions(as_json: bool) -> None:
    """List sessions, newest first."""
    _listing(
        lambda b: b.session_list(),
        as_json,
        lambda items: _table(
            "sessions",
            ["id", "agent", "status", "events", "created"],
            [
                [s["id"], s["agent_id"], s["status"], s["last_sequence"], s["created_at"]]
                for s in items
            ],
        ),
    )


@cli.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead.")
def runs(session_id: str, as_json: bool) -> None:
    """List SESSION_ID's runs, oldest first."""
    _listing(
        lambda b: b.run_list(session_id=session_id),
        as_json,
        lambda items: _table(
            "runs",
            ["id", "status", "provider", "tokens in/out", "cost", "created"],
            [
                [
                    r["id"],
                    r["status"],
                    r["provider"],
                    f"{(r['token_usage'] or {}).get('input_tokens', 0)}/"
                    f"{(r['token_usage'] or {}).get('output_tokens', 0)}",
                    r["cost_usd"],
                    r["created_at"],
                ]
                for r in items
            ],
        ),
    )


@cli.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel RUN_ID (a running run stops shortly; see `asm runs`)."""
    backend = _backend()
    try:
        result = backend.run_cancel(run_id=run_id)
    except CliError as exc:
        _fail(exc)
        return
    finally:
        backend.close()
    console.print(f"run {result['id']}: {result['status']} (cancel requested)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead.")
def providers(as_json: bool) -> None:
    """List the registered providers and their health."""
    _listing(
        lambda b: b.provider_list(),
        as_json,
        lambda items: _table(
            "providers",
            ["name", "available", "problem", "cooldown until"],
            [[p["name"], p["available"], p["problem"], p["cooldown_until"]] for p in items],
        ),
    )


def _manage(*args: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["asm", *args])


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve asm (`manage.py asm_serve`; extra arguments are passed on, e.g. --port)."""
    _manage("migrate", "--verbosity", "0")
    _manage("asm_serve", *ctx.args)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (`celery -A asm_project worker`; extra arguments passed on)."""
    command = [sys.executable, "-m", "celery", "-A", "asm_project", "worker", *ctx.args]
    sys.exit(subprocess.call(command))  # noqa: S603 (our own interpreter and arguments)


def main() -> None:
    cli()
