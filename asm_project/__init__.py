"""asm project wiring: settings, ASGI/WSGI entry points, URLs, the Celery app."""

from asm_project.celery import app as celery_app

__all__ = ["celery_app"]
