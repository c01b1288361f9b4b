"""Test doubles for the provider tests: fake servers and a fake CLI that speak the real wire
formats (no network), and the recording `Emit` the adapters are run with."""
