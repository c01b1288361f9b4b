"""The Celery app. Settings come from Django settings under the CELERY_ namespace.

Broker: Redis when REDIS_URL is set; otherwise `memory://`, consumed by the embedded
in-process worker (`workers.embedded`). Tasks live only in `workers/tasks.py`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_project.settings.base")

app = Celery("asm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
