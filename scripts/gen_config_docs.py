"""Generate docs/configuration.md: every environment variable asm reads, its default, its meaning.

Sources (parsed, never imported, so the output does not depend on the current environment):
- `asm_project/settings/base.py`: every `env.<type>("NAME", default=...)`, `env_secret("NAME")`
  and `os.environ.get("NAME")` call; the meaning is the block of `#` comments directly above
  the statement (else `FALLBACK_MEANINGS` below), plus a trailing `# ...` comment.
- `asm_cli/*.py`, `runs/providers/*.py`, `sessions/workspaces/*.py`: every `env_str`,
  `env_flag`, `env_int`, `env_list("NAME")` and `os.environ.get(NAME)` (a literal or a module
  constant such as `ROOTS_ENV = "ASM_WORKSPACE_ROOTS"`); the meaning is `FALLBACK_MEANINGS`
  or else the module docstring line naming it.

Invariants: the output is a pure function of those files (sorted, no timestamps), so
`tests/unit/project/test_config_docs.py` can regenerate it and compare byte for byte.
Usage: `python scripts/gen_config_docs.py` (writes) or `--check` (exit 1 when out of date).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "asm_project" / "settings" / "base.py"
MODULE_GLOBS = ("asm_cli/*.py", "runs/providers/*.py", "sessions/workspaces/*.py")
OUTPUT = ROOT / "docs" / "configuration.md"

# Variables read by child processes or the OS, not configuration of asm itself.
IGNORED = {"PATH", "TMPDIR", "HOME"}
ENV_READERS = {"env_str", "env_flag", "env_int", "env_list", "env_secret"}
ENV_METHODS = {"str", "bool", "int", "float", "list", "json", "db_url", "dict", "tuple"}

# Meanings for settings whose line has no comment of its own (base.py stays terse); a new
# setting without a comment is listed with an empty meaning until it gets one here or there.
FALLBACK_MEANINGS = {
    "DJANGO_DEBUG": "Development mode. False requires DJANGO_SECRET_KEY, "
    "DJANGO_ALLOWED_HOSTS, DATABASE_URL and REDIS_URL (start fails naming what is missing).",
    "DJANGO_SECRET_KEY": "Django's signing key (or DJANGO_SECRET_KEY_FILE); a fixed "
    "insecure key in development.",
    "DJANGO_ALLOWED_HOSTS": "Comma-separated host names the server answers to.",
    "DJANGO_READ_DOT_ENV_FILE": "True: read `.env` in the project root first.",
    "DATABASE_URL": "postgres://user:pass@host:5432/db; unset: the SQLite file ASM_SQLITE_PATH.",
    "REDIS_URL": "redis://host:6379/0: Celery broker, cache, channel layer and router health; "
    "unset: embedded mode (in-process worker, memory broker).",
    "ASM_SQLITE_PATH": "The SQLite database file when DATABASE_URL is unset.",
    "ASM_SQLITE_BUSY_TIMEOUT_S": "Seconds a SQLite writer waits for the write lock.",
    "ASM_DB_CONN_MAX_AGE": "PostgreSQL persistent connection lifetime, seconds.",
    "ASM_DEFAULT_PROVIDER": "The provider of runs that name none.",
    "ASM_RUN_TIMEOUT_MS": "A run's timeout when options.timeout_ms is not given.",
    "ASM_RUN_LEASE_MS": "A running run's lease; a worker renews it, the reaper fails runs "
    "whose lease expired.",
    "ASM_SESSION_LOCK_TTL_MS": "Time-to-live of the per-session execution lock.",
    "ASM_REAPER_INTERVAL_S": "Period of the stale-run reaper (beat or embedded thread).",
    "ASM_CANCEL_GRACE_S": "How long a cancelled run's adapter gets to stop before it is abandoned.",
    "ASM_STREAM_FLUSH_MS": "message_streamed chunks are batched and written at most this often.",
    "ASM_MAX_QUEUED_RUNS": "Pending runs allowed per session (max_runs_exceeded beyond).",
    "ASM_MAX_PARALLEL_RUNS": "Runs executing at once across the fleet.",
    "ASM_MAX_PARALLEL_SESSIONS": "Sessions executing at once across the fleet.",
    "ASM_LIMIT_RETRY_S": "Delay before a drain refused by a parallelism limit tries again.",
    "ASM_DRAIN_FLAG_TTL_MS": "Time-to-live of the 'drain scheduled' flag of a session.",
    "ASM_REDIS_PREFIX": "Prefix of asm's own Redis keys.",
    "ASM_EMBEDDED_WORKER_THREADS": "Threads of the in-process worker in embedded mode.",
    "ASM_ROUTER_COOLDOWN_MS": "How long a failing provider is skipped by the router.",
    "ASM_COST_RATES": "Token rates per provider and model, USD per million tokens "
    "(docs/costs-and-budgets.md); a provider named here replaces its defaults.",
    "ASM_BUDGET_RESERVE_TOKENS": "Tokens one run reserves against an owner budget when its "
    "policy sets no max_total_tokens.",
    "ASM_BUDGET_CACHE_S": "Seconds a process caches which owners have budgets.",
    "ASM_AGENT_CACHE_S": "Seconds a process caches agent manifests.",
    "ASM_CELERY_QUEUE": "The Celery queue runs are drained on.",
    "ASM_TASK_TIME_LIMIT_S": "Celery hard time limit of one task (soft limit 60 s less).",
    "ASM_READYZ_TIMEOUT_S": "Timeout of each dependency check of /readyz.",
    "ASM_THROTTLE_RATE": "API rate limit per authenticated user (DRF rate string).",
    "ASM_ANON_THROTTLE_RATE": "API rate limit per anonymous client.",
    "ASM_LOG_LEVEL": "Root log level.",
    "ASM_STREAM_BUFFER": "See ASM_WS_HEARTBEAT_S.",
    "ASM_STREAM_POLL_S": "See ASM_WS_HEARTBEAT_S.",
    "ASM_CHANNELS_PREFIX": "See ASM_WS_HEARTBEAT_S.",
    "ASM_REDACT_PATTERNS": "Comma-separated regular expressions redacted from log records "
    "and stored events, besides the built-in secret shapes (see ASM_LOG_FORMAT).",
    # Read outside the settings (module section): stated here so the table does not
    # change whenever a module's docstring is reworded.
    "ASM_URL": "The `asm` command's server (e.g. http://127.0.0.1:8000); unset: the command "
    "runs embedded (docs/cli.md).",
    "ASM_TOKEN": "The `asm` command's API token for ASM_URL (`manage.py asm_token`).",
}


@dataclass
class Var:
    name: str
    kind: str
    default: str
    meaning: str
    source: str


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


def _comment_above(lines: list[str], lineno: int) -> str:
    """The contiguous `#` comment block ending right above line `lineno` (1-based)."""
    block: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        text = lines[i].strip().lstrip("#").strip()
        if set(text) <= {"-"} or text.startswith("-" * 10):
            break
        block.insert(0, text)
        i -= 1
    return " ".join(block)


def _trailing_comment(line: str) -> str:
    match = re.search(r"#\s*(?!noqa)(.+)$", line)
    if not match or '"' in line[match.start() :]:
        return ""
    return match.group(1).strip()


def _call_name(node: ast.Call) -> tuple[str, str] | None:
    """(variable name, kind) when `node` reads an environment variable by a literal name."""
    func = node.func
    if not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    name = node.args[0].value
    if not isinstance(name, str):
        return None
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "env"
        and func.attr in ENV_METHODS
    ):
        return name, func.attr
    if isinstance(func, ast.Attribute) and func.attr == "get":
        owner = func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "environ":
            return name, "str"
    if isinstance(func, ast.Name) and func.id in ENV_READERS:
        return name, "secret" if func.id == "env_secret" else func.id.removeprefix("env_")
    return None


def _default(node: ast.Call) -> str:
    for keyword in node.keywords:
        if keyword.arg == "default":
            return ast.unparse(keyword.value)
    if len(node.args) > 1:
        return ast.unparse(node.args[1])
    return ""


def settings_vars(path: Path = SETTINGS) -> list[Var]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    found: dict[str, Var] = {}
    for stmt in ast.walk(tree):
        if not isinstance(stmt, ast.stmt) or isinstance(stmt, ast.FunctionDef | ast.ClassDef):
            continue
        # A compound statement's own expression only; its body's statements come on their own.
        scope = stmt.test if isinstance(stmt, ast.If | ast.While) else stmt
        if isinstance(stmt, ast.For | ast.With | ast.Try):
            continue
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            hit = _call_name(node)
            if hit is None or hit[0] in found or hit[0] in IGNORED:
                continue
            name, kind = hit
            if name.endswith("_FILE") and kind == "str":
                continue  # the `<NAME>_FILE` form of secrets: documented once, below
            meaning = _comment_above(lines, stmt.lineno) or FALLBACK_MEANINGS.get(name, "")
            trailing = _trailing_comment(lines[node.lineno - 1])
            meaning = "; ".join(part for part in (meaning, trailing) if part)
            found[name] = Var(name, kind, _default(node), meaning, "asm_project/settings/base.py")
    return list(found.values())


def module_vars(globs: tuple[str, ...] = MODULE_GLOBS) -> list[Var]:
    found: dict[str, Var] = {}
    for pattern in globs:
        for path in sorted(ROOT.glob(pattern)):
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            docstring = ast.get_docstring(tree) or ""
            constants = {
                target.id: stmt.value.value
                for stmt in tree.body
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                for target in stmt.targets
                if isinstance(target, ast.Name) and isinstance(stmt.value.value, str)
            }
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                reader = (isinstance(func, ast.Name) and func.id in ENV_READERS) or (
                    isinstance(func, ast.Attribute)
                    and func.attr == "get"
                    and isinstance(func.value, ast.Attribute)
                    and func.value.attr == "environ"
                )
                if not reader:
                    continue
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    name = arg.value
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    name = constants[arg.id]
                else:
                    continue
                if name in IGNORED or name in found or not re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                    continue
                kind = func.id.removeprefix("env_") if isinstance(func, ast.Name) else "str"
                rel = path.relative_to(ROOT).as_posix()
                meaning = FALLBACK_MEANINGS.get(name) or next(
                    (_one_line(line) for line in docstring.splitlines() if name in line), ""
                )
                found[name] = Var(name, kind, "", meaning or f"read by `{rel}`", rel)
    return list(found.values())


def render() -> str:
    settings = sorted(settings_vars(), key=lambda v: v.name)
    modules = sorted(
        (v for v in module_vars() if v.name not in {s.name for s in settings}),
        key=lambda v: (v.source, v.name),
    )
    out = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by scripts/gen_config_docs.py from asm_project/settings/base.py,",
        "     asm_cli/*.py, runs/providers/*.py and sessions/workspaces/*.py. Do not edit by",
        "     hand:",
        "     run `python scripts/gen_config_docs.py`. -->",
        "",
        "Every environment variable asm reads. Settings are read once at start "
        "(django-environ); a secret (`DJANGO_SECRET_KEY`, `ASM_METRICS_TOKEN`) may also come "
        "from `<NAME>_FILE`, a path whose content is the value. `.env` is read only with "
        "`DJANGO_READ_DOT_ENV_FILE=True`. Provider and workspace variables are read by the "
        "adapter when it is built, and a constructor keyword in `ASM_PROVIDER_CONFIG` wins "
        "over them (docs/providers.md).",
        "",
        "## Settings (`asm_project/settings/base.py`)",
        "",
        "| Variable | Type | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for var in settings:
        default = f"`{_one_line(var.default)}`" if var.default else "(none)"
        out.append(f"| `{var.name}` | {var.kind} | {default} | {_one_line(var.meaning)} |")
    out += [
        "",
        "## Command line, providers and workspaces",
        "",
        "Unset means the module's default, given in its docstring and in docs/cli.md, "
        "docs/providers.md and docs/workspaces.md.",
        "",
        "| Variable | Type | Read by | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for var in modules:
        out.append(f"| `{var.name}` | {var.kind} | `{var.source}` | {var.meaning} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/gen_config_docs.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
