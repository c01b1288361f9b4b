"""asm project wiring: settings, ASGI/WSGI entry points, URLs, the Celery app."""
