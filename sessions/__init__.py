"""Sessions (app label `agent_sessions`): the Session model and its lifecycle services."""
