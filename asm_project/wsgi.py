"""WSGI entry point (for management tooling; the service runs on ASGI)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")

application = get_wsgi_application()
