"""Provider adapters: the port (``base``), the registry and the built-in providers.

Plain Python: nothing here imports Django or touches the ORM. The executor builds a
``RunContext`` for each attempt, calls ``provider.execute(context, emit, cancel_token)``
and stores what the provider emits; the provider returns a ``ProviderResult`` or raises an
``AsmError`` with a taxonomy code (``cancelled`` when it stopped because of the token).
"""

from runs.providers.base import (
    CancelToken,
    Capability,
    CapabilityType,
    Emit,
    Negotiation,
    Provider,
    ProviderResult,
    RunContext,
    capabilities_of_type,
    has_capability,
    input_messages,
    negotiate,
    parse_requirement,
)
from runs.providers.echo import EchoOptions, EchoProvider, validate_adapter_opts
from runs.providers.registry import ProviderRegistry, build_registry

__all__ = [
    "CancelToken",
    "Capability",
    "CapabilityType",
    "EchoOptions",
    "EchoProvider",
    "Emit",
    "Negotiation",
    "Provider",
    "ProviderRegistry",
    "ProviderResult",
    "RunContext",
    "build_registry",
    "capabilities_of_type",
    "has_capability",
    "input_messages",
    "negotiate",
    "parse_requirement",
    "validate_adapter_opts",
]
