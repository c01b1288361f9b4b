"""The provider registry and build_registry."""

from __future__ import annotations

import uuid

import pytest

from asm_core.errors import AsmError
from runs.providers import (
    CancelToken,
    Capability,
    EchoProvider,
    Emit,
    ProviderRegistry,
    ProviderResult,
    RunContext,
    build_registry,
)


class Misconfigured:
    name = "broken"

    def capabilities(self) -> list[Capability]:
        return [Capability("tool", "t")]

    def execute(self, context: RunContext, emit: Emit, cancel_token: CancelToken) -> ProviderResult:
        raise AsmError("provider_unavailable")

    def cancel(self, run_id: uuid.UUID) -> None:
        pass

    def validate_config(self) -> None:
        raise AsmError("validation_error", "ASM_BROKEN_KEY is not set", {"field": "api_key"})

    def validate_adapter_opts(self, opts: object) -> None:
        pass


class Crashing(Misconfigured):
    name = "crashing"

    def capabilities(self) -> list[Capability]:
        raise RuntimeError("capabilities exploded")


class NotAProvider:
    name = "nope"


class NeedsArgs(Misconfigured):
    def __init__(self, key: str) -> None:
        self.key = key


def test_register_get_names_contains() -> None:
    registry = ProviderRegistry()
    echo = EchoProvider()
    registry.register(echo)
    registry.register(Misconfigured())
    assert registry.get("echo") is echo
    assert registry.names() == ["broken", "echo"]
    assert "echo" in registry
    assert "claude" not in registry
    assert len(registry) == 2


def test_unknown_provider() -> None:
    registry = ProviderRegistry([EchoProvider(), Misconfigured()])
    with pytest.raises(AsmError) as info:
        registry.get("claude")
    err = info.value
    assert err.code == "validation_error"
    assert err.message == "Unknown provider 'claude'; registered: broken, echo"
    assert err.details == {"provider": "claude", "registered": ["broken", "echo"]}


def test_duplicate_name() -> None:
    registry = ProviderRegistry([EchoProvider()])
    with pytest.raises(AsmError) as info:
        registry.register(EchoProvider())
    assert info.value.code == "already_exists"
    assert info.value.details == {"provider": "echo"}


def test_describe() -> None:
    registry = ProviderRegistry([EchoProvider(), Misconfigured(), Crashing()])
    described = registry.describe()
    assert [d["name"] for d in described] == ["broken", "crashing", "echo"]
    broken, crashing, echo = described
    assert broken == {
        "name": "broken",
        "capabilities": [{"type": "tool", "name": "t", "enabled": True, "description": None}],
        "available": False,
        "problem": "ASM_BROKEN_KEY is not set",
    }
    assert crashing["available"] is False
    assert crashing["problem"] == "capabilities exploded"
    assert echo["available"] is True
    assert echo["problem"] is None
    assert {c["name"] for c in echo["capabilities"]} == {"streaming", "cancel", "echo_tool"}


def test_build_registry() -> None:
    registry = build_registry(["runs.providers.echo.EchoProvider", f"{__name__}.Misconfigured"])
    assert registry.names() == ["broken", "echo"]
    assert isinstance(registry.get("echo"), EchoProvider)


def test_build_registry_duplicate() -> None:
    with pytest.raises(AsmError) as info:
        build_registry(["runs.providers.echo.EchoProvider", "runs.providers.EchoProvider"])
    assert info.value.code == "already_exists"


@pytest.mark.parametrize(
    "path",
    [
        "EchoProvider",
        "runs.providers.nonexistent.EchoProvider",
        "runs.providers.echo.NoSuchClass",
        "runs.providers.echo.ECHO_MODEL",
        f"{__name__}.NotAProvider",
        f"{__name__}.NeedsArgs",
    ],
)
def test_build_registry_bad_path(path: str) -> None:
    with pytest.raises(AsmError) as info:
        build_registry([path])
    assert info.value.code == "validation_error"
    assert info.value.details == {"path": path}
