"""The provider registry: the providers this deployment can run, by name.

Plain Python (no Django). ``build_registry`` imports provider classes by dotted path (the
composition root passes the configured list) and instantiates each with the keyword
arguments configured for its name (none by default).

Invariants:

- Names are unique: registering a second provider with the same name is ``already_exists``.
- ``get`` of an unknown name is ``validation_error`` (it is a bad ``provider`` in a request),
  listing the registered names.
- The registry is filled at startup and only read afterwards, so concurrent ``get`` calls
  need no lock.
- ``describe`` never raises because one provider is misconfigured: that provider is
  reported ``available: false`` with its problem.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from runs.providers.base import Provider

__all__ = ["ProviderRegistry", "build_registry"]


class ProviderRegistry:
    """Providers by name."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> None:
        """Add ``provider``; a duplicate name -> ``already_exists``."""
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name:
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"Provider {provider!r} has no name",
                {"provider": repr(provider)},
            )
        if name in self._providers:
            raise AsmError(
                ErrorCode.ALREADY_EXISTS,
                f"Provider {name!r} is already registered",
                {"provider": name},
            )
        self._providers[name] = provider

    def get(self, name: str) -> Provider:
        """The provider called ``name``; unknown -> ``validation_error``."""
        provider = self._providers.get(name)
        if provider is None:
            registered = self.names()
            raise AsmError(
                ErrorCode.VALIDATION_ERROR,
                f"Unknown provider {name!r}; registered: {', '.join(registered) or '(none)'}",
                {"provider": name, "registered": registered},
            )
        return provider

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __len__(self) -> int:
        return len(self._providers)

    def describe(self) -> list[dict[str, Any]]:
        """One entry per provider, sorted by name: ``{name, capabilities, available, problem}``.

        ``available`` is false, with ``problem`` set to the error message, when
        ``validate_config`` (or ``capabilities``) raises.
        """
        out: list[dict[str, Any]] = []
        for name in self.names():
            provider = self._providers[name]
            problem: str | None = None
            capabilities: list[dict[str, Any]] = []
            try:
                capabilities = [c.to_dict() for c in provider.capabilities()]
                provider.validate_config()
            except AsmError as exc:
                problem = exc.message
            except Exception as exc:  # a broken provider must not break the listing
                problem = str(exc) or type(exc).__name__
            out.append(
                {
                    "name": name,
                    "capabilities": capabilities,
                    "available": problem is None,
                    "problem": problem,
                }
            )
        return out


def _import_provider(path: str, config: Mapping[str, Mapping[str, Any]]) -> Provider:
    if not isinstance(path, str) or "." not in path:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Invalid provider path {path!r}: expected 'package.module.ClassName'",
            {"path": path if isinstance(path, str) else repr(path)},
        )
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Cannot import provider module {module_name!r} (from {path!r}): {exc}",
            {"path": path},
        ) from exc
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Provider path {path!r} does not name a class",
            {"path": path},
        )
    kwargs = dict(config.get(str(getattr(cls, "name", ""))) or {})
    try:
        provider = cls(**kwargs)
    except AsmError:
        raise
    except Exception as exc:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"Cannot instantiate provider {path!r}: {exc}",
            {"path": path},
        ) from exc
    if not isinstance(provider, Provider):
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{path!r} does not implement the Provider protocol",
            {"path": path},
        )
    return provider


def build_registry(
    paths: Sequence[str], config: Mapping[str, Mapping[str, Any]] | None = None
) -> ProviderRegistry:
    """A registry of one instance of each class named by ``paths`` (dotted paths).

    ``config`` maps a provider name (the class's ``name`` attribute) to the keyword
    arguments its class is built with (``ASM_PROVIDER_CONFIG``); adapters read their
    environment variables for whatever is not given.

    A path that cannot be imported, is not a class, fails to instantiate or does not
    implement ``Provider`` -> ``validation_error`` (details ``{"path"}``); two classes with
    the same provider name -> ``already_exists``.
    """
    if isinstance(paths, str):
        paths = [paths]
    registry = ProviderRegistry()
    for path in paths:
        registry.register(_import_provider(path, config or {}))
    return registry
