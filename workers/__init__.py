"""Workers: Celery tasks only (thin), the beat schedule, lock and lease helpers."""
