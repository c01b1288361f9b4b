"""Events: the append-only, per-session sequenced event log (model, store, selectors)."""
