# asm: one image for every process of docker-compose.yml: web (uvicorn, ASGI), Celery worker
# and beat, and the one-shot migrate job. Slim base, dependencies built in a separate stage,
# runs as the unprivileged user `asm` (uid 10001).
#   docker build -t asm:local .

# ---------------------------------------------------------------- build: wheels only
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY asm_project ./asm_project
COPY asm_core ./asm_core
COPY asm_cli ./asm_cli
COPY sessions ./sessions
COPY runs ./runs
COPY events ./events
COPY workers ./workers
# the `otel` extra: spans go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
RUN pip wheel --wheel-dir /wheels '.[otel]'

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=asm_project.settings.base \
    PYTHONPATH=/app

# git: the workspace snapshot backend (docs/workspaces.md); nothing else is installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin asm

COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels 'asm[otel]' && rm -rf /wheels

# The sources too, first on the path (PYTHONPATH): the wheel carries no templates or static
# files, and BASE_DIR (settings) is then /app, whose var/ is the one writable directory.
WORKDIR /app
COPY --from=build /src /app
COPY manage.py ./
RUN mkdir -p /app/var /workspaces && chown asm:asm /app/var /workspaces

USER asm
EXPOSE 8000
CMD ["uvicorn", "asm_project.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
