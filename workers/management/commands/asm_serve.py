"""`manage.py asm_serve`: the service in one process (the README's run command).

Serves the ASGI app with uvicorn; with REDIS_URL unset it also runs the embedded worker and
reaper (`workers.embedded`), so runs execute in the background of this one process.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve asm (ASGI); with no REDIS_URL, also run the in-process worker and reaper."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start the embedded worker"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from asm_project.asgi import application
        from workers.embedded import EmbeddedWorker

        worker = None
        if not settings.REDIS_URL and not options["no_worker"]:
            worker = EmbeddedWorker().start()
            self.stdout.write("embedded worker and reaper running (no REDIS_URL)")
        app = ASGIStaticFilesHandler(application) if settings.DEBUG else application
        try:
            # Open SSE streams would hold shutdown forever; after 5 s they are cut and their
            # clients resume with Last-Event-ID.
            uvicorn.run(
                app,
                host=options["host"],
                port=options["port"],
                log_level="info",
                timeout_graceful_shutdown=5,
            )
        finally:
            if worker is not None:
                worker.stop()
