"""Live smoke tests against real providers: opt-in (marker `live`), skipped without credentials."""
