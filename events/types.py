"""Event types and their payload schemas, for the event store and its callers.

The catalogue lives in ``asm_core.event_types`` so the plain-Python core (executor,
in-memory store, providers) can use it without Django; this module re-exports it for the
``events`` app (``event_append`` validates every payload with ``validate_event``).
"""

# The star import is the point of this module; it re-exports exactly the core's __all__.
from asm_core.event_types import *  # noqa: F403
from asm_core.event_types import __all__ as __all__
