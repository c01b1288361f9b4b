# asm: one image for web (daphne), Celery worker and beat, and the migrate job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 asm
WORKDIR /app

# Only the project's own files (no .venv, no var/): the packages, manage.py and metadata.
COPY pyproject.toml README.md manage.py ./
COPY asm_project ./asm_project
COPY asm_core ./asm_core
COPY sessions ./sessions
COPY runs ./runs
COPY events ./events
COPY workers ./workers
RUN pip install . && mkdir -p /app/var && chown asm:asm /app/var

USER asm
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "asm_project.asgi:application"]
