"""Settings package. `base` holds every setting; `test` adds only test speed-ups."""
