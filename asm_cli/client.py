"""The `asm` command's view of a server: one `Backend` protocol, two implementations.

Invariants: every method returns the public JSON shapes of docs/api.md (dicts), whichever
backend answers, so the rendering code never knows where it runs. Errors surface as
`CliError` carrying the error envelope's code and message. `HttpBackend` talks to `ASM_URL`
with `ASM_TOKEN` (Bearer); the embedded backend lives in `asm_cli.embedded`.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx2


class CliError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Backend(Protocol):
    def session_create(self, *, agent_id: str) -> dict[str, Any]: ...
    def session_latest(self) -> dict[str, Any] | None: ...
    def session_list(self) -> list[dict[str, Any]]: ...
    def run_submit(
        self, *, session_id: str, prompt: str, provider: str | None, options: dict[str, Any]
    ) -> dict[str, Any]: ...
    def run_get(self, *, run_id: str) -> dict[str, Any]: ...
    def run_list(self, *, session_id: str) -> list[dict[str, Any]]: ...
    def run_cancel(self, *, run_id: str) -> dict[str, Any]: ...
    def event_page(
        self, *, session_id: str, after: int, run_id: str | None = None
    ) -> list[dict[str, Any]]: ...
    def provider_list(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class HttpBackend:
    """The API at `base_url` (e.g. http://127.0.0.1:8000; `/api/v1` is appended)."""

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx2.Client(
            base_url=base_url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout_s
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            raise CliError("connection_error", str(exc)) from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise CliError(str(error.get("code")), str(error.get("message")))
            except (ValueError, KeyError, TypeError):
                raise CliError("http_error", f"HTTP {response.status_code}") from None
        return response.json()

    def session_create(self, *, agent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/sessions", json={"agent_id": agent_id})
        return result

    def session_latest(self) -> dict[str, Any] | None:
        page = self._call("GET", "/sessions", params={"page_size": 1})
        results: list[dict[str, Any]] = page["results"]
        return results[0] if results else None

    def session_list(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self._call("GET", "/sessions")["results"]
        return results

    def run_submit(
        self, *, session_id: str, prompt: str, provider: str | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": {"prompt": prompt}, "options": options}
        if provider:
            body["provider"] = provider
        result: dict[str, Any] = self._call("POST", f"/sessions/{session_id}/runs", json=body)
        return result

    def run_get(self, *, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/runs/{run_id}")
        return result

    def run_list(self, *, session_id: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self._call("GET", f"/sessions/{session_id}/runs")["results"]
        return results

    def run_cancel(self, *, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/runs/{run_id}/cancel")
        return result

    def event_page(
        self, *, session_id: str, after: int, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after": after, "limit": 1000}
        if run_id:
            params["run_id"] = run_id
        page = self._call("GET", f"/sessions/{session_id}/events", params=params)
        results: list[dict[str, Any]] = page["results"]
        return results

    def provider_list(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self._call("GET", "/providers")["results"]
        return results

    def close(self) -> None:
        self._http.close()


def backend_open(url: str | None, token: str | None) -> Backend:
    """`HttpBackend` when a URL is given, else the embedded backend (Django in-process)."""
    if url:
        return HttpBackend(url, token)
    from asm_cli.embedded import EmbeddedBackend

    return EmbeddedBackend.start()
