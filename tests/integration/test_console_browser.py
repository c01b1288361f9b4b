"""The operator console in a real browser: log in to the admin, open a session, submit a
prompt, watch the reply stream in over the WebSocket, cancel a run, complete the session.

Tier: integration (CI runs it). The server it drives is a real `manage.py asm_serve`
subprocess in **embedded mode** on a temporary SQLite file: the point here is the whole
browser path (admin login cookie -> CSRF-checked API calls -> worker -> event log ->
WebSocket -> DOM), and embedded mode gives one self-contained process with its own worker
and a throwaway database, so the test needs no Celery worker process and no database
cleanup. The same API, stream and worker paths on PostgreSQL + Redis are covered by the
other integration tests.

Browser: Debian's Chromium (`apt-get install -y chromium`, /usr/bin/chromium; override with
ASM_CHROMIUM) driven by Playwright (pip `playwright`, in the dev extras; no browser download).
Missing either is a failure in CI (CI=true or ASM_REQUIRE_SERVICES=1) and a skip elsewhere.
Screenshots: var/artifacts/console-streaming.png (mid-stream) and var/artifacts/console.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "artifacts"
CHROMIUM = os.environ.get("ASM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USERNAME, PASSWORD = "operator", "console-pass-123"
PROMPT = "The quick brown fox jumps over the lazy dog while the operator console streams every word"


def _missing(problem: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("ASM_REQUIRE_SERVICES") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        _missing(
            f"the console browser test needs Chromium at {CHROMIUM}: "
            "install the Debian package `chromium` (apt-get install -y chromium)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the console browser test needs Playwright: pip install -e '.[dev]'")
    return str(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base_url: str
    session_id: str
    log: Path


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="asm_project.settings.base",
        DJANGO_DEBUG="True",  # embedded mode; also serves the admin's static files
        ASM_SQLITE_PATH=str(tmp / "asm.sqlite3"),
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        PYTHONPATH=str(ROOT),
    )
    _manage(env, "migrate", "--noinput")
    _manage(env, "createsuperuser", "--noinput", "--username", USERNAME, "--email", "op@x.test")
    session_id = (
        _manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import User\n"
            "from sessions.services import session_create\n"
            f"owner = User.objects.get(username={USERNAME!r})\n"
            "print(session_create(agent_id='console-agent', owner=owner).id)",
        )
        .strip()
        .splitlines()[-1]
    )

    port = _free_port()
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "asm_serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"asm_serve did not start:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield Server(base_url=base_url, session_id=session_id, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server_log(server: Server) -> str:
    return server.log.read_text(errors="replace")[-6000:]


# Records every distinct text the streaming block showed, so the test can prove the reply
# appeared piece by piece (and not all at once after the run ended).
RECORD_STREAM = """() => {
  window.__streamTexts = [];
  window.__notReloaded = true;
  const timeline = document.querySelector('[data-role="timeline"]');
  new MutationObserver(() => {
    const node = timeline.querySelector('li[data-type="message_streamed"] .asm-text');
    const text = node ? node.textContent : null;
    const seen = window.__streamTexts;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  }).observe(timeline, {childList: true, subtree: true, characterData: true});
}"""


def test_console_streams_a_run_live_and_drives_the_api(chromium: str, server: Server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    change_url = f"/admin/agent_sessions/session/{server.session_id}/change/"
    console_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(20_000)
            page.on("dialog", lambda dialog: dialog.accept())
            page.on("pageerror", lambda exc: console_errors.append(f"script error: {exc}"))
            page.on(
                "response",
                lambda resp: (
                    console_errors.append(f"HTTP {resp.status} {resp.url}")
                    if resp.status >= 400 and not resp.url.endswith("/favicon.ico")
                    else None
                ),
            )

            # Log in through the admin's own form: the console runs on that cookie.
            page.goto(f"{server.base_url}/admin/login/?next={change_url}")
            page.fill("#id_username", USERNAME)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"**{change_url}")

            console = page.locator("#asm-console")
            expect(console).to_be_visible()
            expect(console.locator('[data-role="connection"]')).to_have_attribute(
                "data-state", "live"
            )
            # The history (session_created) came over the WebSocket.
            expect(
                page.locator('[data-role="timeline"] li[data-type="session_created"]')
            ).to_have_count(1)
            page.evaluate(RECORD_STREAM)

            # 1. Submit a prompt to echo, streamed word by word with a pause between chunks.
            page.fill("#asm-prompt", PROMPT)
            page.fill("#asm-provider", "echo")
            page.fill("#asm-options", json.dumps({"adapter_opts": {"delay_ms": 150}}))
            page.click('[data-action="submit"]')

            streaming = page.locator(
                '[data-role="timeline"] li[data-type="message_streamed"][data-state="streaming"]'
            )
            expect(streaming).to_have_count(1)
            expect(streaming.locator(".asm-text")).to_contain_text("brown fox")
            page.screenshot(path=str(ARTIFACTS / "console-streaming.png"))

            done = page.locator(
                '[data-role="timeline"] li[data-type="message_streamed"][data-state="complete"]'
            )
            expect(done.locator(".asm-text")).to_have_text(PROMPT)
            run_rows = page.locator('[data-role="runs"] tbody tr[data-run-id]')
            expect(run_rows).to_have_count(1)
            expect(run_rows.first).to_have_attribute("data-status", "completed", timeout=20_000)
            expect(
                page.locator('[data-role="timeline"] li[data-type="run_completed"]')
            ).to_have_count(1)
            expect(
                page.locator('[data-role="timeline"] li[data-type="token_usage_updated"]')
            ).to_have_count(1)
            # The runs panel picks up tokens once the run is done.
            expect(run_rows.first.locator("td").nth(4)).not_to_have_text("-")

            texts: list[str] = page.evaluate("window.__streamTexts")
            partial = [t for t in texts if t != PROMPT]
            assert len(partial) >= 3, f"the reply did not stream in pieces: {texts!r}"
            assert all(PROMPT.startswith(t) for t in partial), texts
            assert page.evaluate("window.__notReloaded") is True

            # 2. A run that hangs after its reply, cancelled from the runs panel.
            page.fill("#asm-prompt", "wait for me")
            page.fill("#asm-options", json.dumps({"adapter_opts": {"hang": True}}))
            page.click('[data-action="submit"]')
            expect(run_rows).to_have_count(2)
            second = run_rows.nth(1)
            expect(second).to_have_attribute("data-status", "running")
            second.locator('button[data-action="cancel-run"]').click()
            expect(second).to_have_attribute("data-status", "cancelled", timeout=20_000)
            expect(
                page.locator('[data-role="timeline"] li[data-type="run_cancelled"]')
            ).to_have_count(1)

            # 3. Complete the session (the confirm dialog is accepted).
            page.click('[data-action="complete"]')
            status = console.locator('[data-role="session-status"]')
            expect(status).to_have_text("completed")
            expect(
                page.locator('[data-role="timeline"] li[data-type="session_completed"]')
            ).to_have_count(1)
            expect(console.locator('[data-action="submit"]')).to_be_disabled()

            shot = ARTIFACTS / "console.png"
            # The whole timeline in the artifact (it normally scrolls inside a fixed height).
            page.evaluate(
                "document.querySelector('[data-role=\"timeline\"]').style.maxHeight = 'none'"
            )
            console.screenshot(path=str(shot))
            print(f"\nconsole screenshots: {shot} and {ARTIFACTS / 'console-streaming.png'}")
        except Exception:
            print(f"--- asm_serve log (tail) ---\n{_server_log(server)}")
            raise
        finally:
            browser.close()

    assert not console_errors, f"the page had errors: {console_errors}"
    # The server is still healthy afterwards (embedded mode: Redis skipped, memory broker).
    with urllib.request.urlopen(f"{server.base_url}/readyz", timeout=5) as resp:  # noqa: S310
        ready: dict[str, Any] = json.loads(resp.read())
    assert ready["status"] == "ok", ready
