"""Composition root: the provider registry and the executor, built from settings."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from runs.coordination import coordinator
from runs.executor import ExecutorConfig, RunExecutor
from runs.providers.registry import ProviderRegistry, build_registry
from runs.store import DjangoSessionStore


@cache
def provider_registry() -> ProviderRegistry:
    return build_registry(settings.ASM_PROVIDERS, settings.ASM_PROVIDER_CONFIG)


def executor_config() -> ExecutorConfig:
    return ExecutorConfig(
        default_provider=settings.ASM_DEFAULT_PROVIDER,
        default_timeout_ms=settings.ASM_RUN_TIMEOUT_MS,
        lease_ms=settings.ASM_RUN_LEASE_MS,
        flush_interval_s=settings.ASM_STREAM_FLUSH_MS / 1000,
        cancel_grace_s=settings.ASM_CANCEL_GRACE_S,
    )


def build_executor(owner: str) -> RunExecutor:
    return RunExecutor(
        DjangoSessionStore(),
        provider_registry(),
        owner=owner,
        config=executor_config(),
        cancel_requested=coordinator().cancel_requested,
    )
