"""Runs: the Run model and lifecycle, and the Django ORM implementation of the SessionStore."""
