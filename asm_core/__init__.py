"""The domain core: plain Python, importable without Django settings."""
