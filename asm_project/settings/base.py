"""Every asm setting, read from the environment through one django-environ `env`.

Invariants:
- Backends are chosen per dependency, all or nothing: `DATABASE_URL` unset -> a SQLite file
  (IMMEDIATE transactions, busy timeout, WAL); set -> PostgreSQL through psycopg 3.
  `REDIS_URL` unset -> in-process cache and channel layer; set -> Redis for both.
- With `DJANGO_DEBUG=False`, a missing required setting (secret key, allowed hosts,
  `DATABASE_URL`, `REDIS_URL`) raises `ImproperlyConfigured` at start, naming what is missing.
- `.env` is read only when `DJANGO_READ_DOT_ENV_FILE=True`.
- Every secret may also come from `<NAME>_FILE` (a path whose content is the value).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Generic admin/queryset classes (`ModelAdmin[Session]`) subscriptable at runtime.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=False):
    env.read_env(str(BASE_DIR / ".env"))


def env_secret(name: str, default: str = "") -> str:
    """A secret from `NAME`, or from the file named by `NAME_FILE` (container secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return str(env.str(name, default=default))


DEBUG: bool = env.bool("DJANGO_DEBUG", default=True)

_DEV_SECRET_KEY = "asm-insecure-development-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", default="" if not DEBUG else _DEV_SECRET_KEY)
ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=[] if not DEBUG else ["localhost", "127.0.0.1", "[::1]"]
)

DATABASE_URL: str = env.str("DATABASE_URL", default="")
REDIS_URL: str = env.str("REDIS_URL", default="")

if not DEBUG:
    _missing = [
        name
        for name, value in (
            ("DJANGO_SECRET_KEY", SECRET_KEY),
            ("DJANGO_ALLOWED_HOSTS", ALLOWED_HOSTS),
            ("DATABASE_URL", DATABASE_URL),
            ("REDIS_URL", REDIS_URL),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG=False needs these settings, which are not set: "
            + ", ".join(_missing)
            + ". Set them in the environment (or as <NAME>_FILE for secrets); "
            "see the configuration table in README.md."
        )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc assets served locally (no CDN)
    "channels",
    "sessions.apps.AgentSessionsConfig",
    "runs.apps.RunsConfig",
    "events.apps.EventsConfig",
    "workers.apps.WorkersConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "asm_project.urls"
WSGI_APPLICATION = "asm_project.wsgi.application"
ASGI_APPLICATION = "asm_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --------------------------------------------------------------------------- database
SQLITE_PATH = Path(env.str("ASM_SQLITE_PATH", default=str(BASE_DIR / "var" / "asm.sqlite3")))


def _database_config() -> dict[str, Any]:
    if DATABASE_URL:
        config: dict[str, Any] = env.db_url("DATABASE_URL")
        if config["ENGINE"] not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
            raise ImproperlyConfigured(
                f"DATABASE_URL must be a postgres:// (or sqlite://) URL, got engine "
                f"{config['ENGINE']!r}"
            )
        if config["ENGINE"] == "django.db.backends.postgresql":
            config["CONN_MAX_AGE"] = env.int("ASM_DB_CONN_MAX_AGE", default=60)
            config["CONN_HEALTH_CHECKS"] = True
            # Run the event append statement as a server-side prepared statement
            # (docs/event-store.md; Django's own queries stay unprepared). Set false behind
            # a pooler in transaction mode that cannot keep prepared statements.
            prepared = env.bool("ASM_DB_PREPARED_STATEMENTS", default=True)
            config.setdefault("OPTIONS", {})["prepare_threshold"] = 5 if prepared else None
        return config
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(SQLITE_PATH),
        "OPTIONS": {
            # Writers take the lock at BEGIN, so two writers never deadlock on upgrade;
            # a writer waits up to `timeout` seconds for the lock instead of failing at once.
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("ASM_SQLITE_BUSY_TIMEOUT_S", default=20),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


DATABASES = {"default": _database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------- live streaming
# WebSocket and SSE subscribers (docs/streaming.md): idle heartbeat period, the bound on
# events buffered per connection before a slow subscriber is cut off (WS close 4408), the
# database poll while no doorbell rings, and the channels_redis key prefix.
ASM_WS_HEARTBEAT_S: float = env.float("ASM_WS_HEARTBEAT_S", default=15.0)
ASM_STREAM_BUFFER: int = env.int("ASM_STREAM_BUFFER", default=1000)
ASM_STREAM_POLL_S: float = env.float("ASM_STREAM_POLL_S", default=1.0)
ASM_CHANNELS_PREFIX: str = env.str("ASM_CHANNELS_PREFIX", default="asgi")

# --------------------------------------------------------------------------- redis-backed pieces
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels_redis waits for messages with a 5 s BZPOPMIN; redis-py's default
                # socket timeout is also 5 s, which would fail every idle receive (and close
                # idle WebSockets): the socket timeout must exceed the blocking pop.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": ASM_CHANNELS_PREFIX,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # In-process, and safe to ring from the worker threads' own event loops (events/layers.py).
    CHANNEL_LAYERS = {"default": {"BACKEND": "events.layers.LocalChannelLayer"}}

# --------------------------------------------------------------------------- run execution
# Dotted paths of the provider classes this deployment offers. All built-in adapters are
# registered by default: one whose key or CLI is missing is listed unavailable (GET
# /api/v1/providers says what is missing) and its runs fail with validation_error.
ASM_PROVIDERS: list[str] = env.list(
    "ASM_PROVIDERS",
    default=[
        "runs.providers.echo.EchoProvider",
        "runs.providers.claude.ClaudeProvider",
        "runs.providers.claude_code.ClaudeCodeProvider",
        "runs.providers.codex.CodexProvider",
        "runs.providers.amp.AmpProvider",
    ],
)
# Keyword arguments per provider name, e.g. {"claude": {"model": "claude-sonnet-4-5"}}
# (docs/providers.md lists each adapter's); adapters read their own environment variables
# (ANTHROPIC_API_KEY, ASM_CODEX_BIN, ...) for anything not given here.
ASM_PROVIDER_CONFIG: dict[str, dict[str, Any]] = env.json("ASM_PROVIDER_CONFIG", default={})
ASM_DEFAULT_PROVIDER: str = env.str("ASM_DEFAULT_PROVIDER", default="echo")
ASM_RUN_TIMEOUT_MS: int = env.int("ASM_RUN_TIMEOUT_MS", default=600_000)
ASM_RUN_LEASE_MS: int = env.int("ASM_RUN_LEASE_MS", default=15_000)
ASM_SESSION_LOCK_TTL_MS: int = env.int("ASM_SESSION_LOCK_TTL_MS", default=15_000)
ASM_REAPER_INTERVAL_S: float = env.float("ASM_REAPER_INTERVAL_S", default=5.0)
ASM_CANCEL_GRACE_S: float = env.float("ASM_CANCEL_GRACE_S", default=5.0)
ASM_STREAM_FLUSH_MS: int = env.int("ASM_STREAM_FLUSH_MS", default=50)
ASM_MAX_QUEUED_RUNS: int = env.int("ASM_MAX_QUEUED_RUNS", default=100)
# Continuation (docs/continuity.md): a run's transcript of prior history larger than this
# many characters is compacted (a session_compacted event) before the run starts; 0: never.
ASM_TRANSCRIPT_MAX_CHARS: int = env.int("ASM_TRANSCRIPT_MAX_CHARS", default=100_000)
ASM_MAX_PARALLEL_RUNS: int = env.int("ASM_MAX_PARALLEL_RUNS", default=50)  # 0: unlimited
ASM_MAX_PARALLEL_SESSIONS: int = env.int("ASM_MAX_PARALLEL_SESSIONS", default=100)  # 0: unlimited
ASM_LIMIT_RETRY_S: float = env.float("ASM_LIMIT_RETRY_S", default=1.0)
ASM_DRAIN_FLAG_TTL_MS: int = env.int("ASM_DRAIN_FLAG_TTL_MS", default=10_000)
# The reaper also wakes sessions whose oldest pending run has waited this long with nothing
# running (a lost drain message).
ASM_STRANDED_AFTER_S: float = env.float("ASM_STRANDED_AFTER_S", default=10.0)
ASM_REDIS_PREFIX: str = env.str("ASM_REDIS_PREFIX", default="asm:")
# Retention (docs/event-store.md, Retention): message_streamed chunks of runs that ended more
# than this many days ago are replaced by events_pruned markers; 0 (default): keep forever.
ASM_RETENTION_STREAMED_DAYS: int = env.int("ASM_RETENTION_STREAMED_DAYS", default=0)
# Period of the retention pass, seconds (Celery beat, or the embedded reaper thread).
ASM_RETENTION_INTERVAL_S: float = env.float("ASM_RETENTION_INTERVAL_S", default=3600.0)
# The most runs one retention pass prunes (oldest first; each chunk range is its own short
# transaction, so a backlog drains over several passes).
ASM_RETENTION_BATCH_RUNS: int = env.int("ASM_RETENTION_BATCH_RUNS", default=200)
ASM_EMBEDDED_WORKER_THREADS: int = env.int("ASM_EMBEDDED_WORKER_THREADS", default=4)

# --------------------------------------------------------------------------- provider routing
# The `router` provider (docs/routing.md). Health is shared by the fleet in Redis when
# REDIS_URL is set (keys under ASM_REDIS_PREFIX), process-local otherwise. A provider is
# skipped for ASM_ROUTER_COOLDOWN_MS after ASM_ROUTER_FAILURE_THRESHOLD consecutive
# retryable failures (1: the seed's rule, one failure cools it).
ASM_ROUTER_FAILURE_THRESHOLD: int = env.int("ASM_ROUTER_FAILURE_THRESHOLD", default=1)
ASM_ROUTER_COOLDOWN_MS: int = env.int("ASM_ROUTER_COOLDOWN_MS", default=30_000)
# The default routing policy (JSON, the options.routing shape: prefer, exclude,
# max_attempts, strategy, weights, required_capabilities); a run's options.routing
# replaces each key it gives. {} = priority by provider name, 3 attempts.
ASM_ROUTER_POLICY: dict[str, Any] = env.json("ASM_ROUTER_POLICY", default={})

# --------------------------------------------------------------------------- policies
# The settings-wide policy (JSON, the options.policy shape; docs/policies.md): the first
# layer of every run's policy stack (then the agent's, the session's, the run's; the
# strictest limit and every denial win). {} = no default policy. Validated when a run is
# submitted (an invalid one refuses runs with validation_error, field ASM_DEFAULT_POLICY).
ASM_DEFAULT_POLICY: dict[str, Any] = env.json("ASM_DEFAULT_POLICY", default={})

# --------------------------------------------------------------------------- costs, budgets, agents
# Token rates, USD per MILLION tokens, per provider and model (docs/costs-and-budgets.md):
# {provider: {model: {input, output, cache_read?, cache_write?}}}; a model key also prices
# models it is a prefix of, "*" any model. A provider named in ASM_COST_RATES (JSON) replaces
# that provider's defaults below (Anthropic list prices when written; check yours). Runs of
# a provider/model without rates record cost_usd null and cost_supported false.
_CLAUDE_RATES: dict[str, dict[str, float]] = {
    "claude-sonnet": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "claude-haiku": {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25},
    "claude-opus": {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0, "cache_read": 1.5, "cache_write": 18.75},
    "claude-opus-4-2": {"input": 15.0, "output": 75.0, "cache_read": 1.5, "cache_write": 18.75},
}
ASM_COST_RATES: dict[str, dict[str, Any]] = {
    "echo": {"*": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}},
    "claude": _CLAUDE_RATES,
    "claude_code": _CLAUDE_RATES,
    **env.json("ASM_COST_RATES", default={}),
}
# Owner budgets: what one run reserves before it is dispatched when its policy stack sets no
# max_cost_usd / max_total_tokens; how long (s) a process caches who has budgets and the
# agent manifests it looked up.
ASM_BUDGET_RESERVE_USD: float = env.float("ASM_BUDGET_RESERVE_USD", default=0.25)
ASM_BUDGET_RESERVE_TOKENS: int = env.int("ASM_BUDGET_RESERVE_TOKENS", default=20_000)
ASM_BUDGET_CACHE_S: float = env.float("ASM_BUDGET_CACHE_S", default=5.0)
ASM_AGENT_CACHE_S: float = env.float("ASM_AGENT_CACHE_S", default=5.0)

# --------------------------------------------------------------------------- celery
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_TASK_DEFAULT_QUEUE = env.str("ASM_CELERY_QUEUE", default="asm")
CELERY_TASK_TIME_LIMIT = env.int("ASM_TASK_TIME_LIMIT_S", default=4 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
# Larger than the largest hard time limit: a long run is owned through its DB lease, and an
# unacked drain message is redelivered only after this (the drain is idempotent anyway).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600,
    # The in-process memory transport polls its queue; poll often so the embedded worker
    # starts a submitted run within milliseconds (Redis blocks on BRPOP instead).
    "polling_interval": 0.01,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the DB connection around every task unless told to reuse it;
# a drain is short and frequent, so keep connections (CONN_MAX_AGE still bounds their age).
CELERY_DB_REUSE_MAX = env.int("ASM_CELERY_DB_REUSE_MAX", default=1000)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {"task": "workers.run_reap_stale", "schedule": ASM_REAPER_INTERVAL_S},
    "prune-streamed-events": {
        "task": "workers.events_prune_streamed",
        "schedule": ASM_RETENTION_INTERVAL_S,
    },
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# --------------------------------------------------------------------------- auth, i18n, static
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --------------------------------------------------------------------------- operations
# /metrics needs `Authorization: Bearer <token>` when set; open when empty (docs/operations.md).
ASM_METRICS_TOKEN: str = env_secret("ASM_METRICS_TOKEN")
ASM_READYZ_TIMEOUT_S: float = env.float("ASM_READYZ_TIMEOUT_S", default=2.0)

ASM_THROTTLE_RATE: str = env.str("ASM_THROTTLE_RATE", default="6000/min")
ASM_ANON_THROTTLE_RATE: str = env.str("ASM_ANON_THROTTLE_RATE", default="600/min")

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "asm_project.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["asm_project.errors.JsonBodyParser"],
    "EXCEPTION_HANDLER": "asm_project.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"user": ASM_THROTTLE_RATE, "anon": ASM_ANON_THROTTLE_RATE},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "asm: Agent Session Manager API",
    "DESCRIPTION": "Sessions, queued runs and their sequenced event logs (docs/api.md).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "SessionStatusEnum": "asm_core.lifecycle.SessionStatus",
        "RunStatusEnum": "asm_core.lifecycle.RunStatus",
        "EventTypeEnum": "asm_core.event_types.EventType",
    },
}

# Logs (docs/audit-and-logs.md): `json` (one object per line, with session_id, run_id,
# task_id and provider bound) or `text`; json by default when DEBUG is off. Secrets are
# redacted from every record (built-in key shapes, the configured provider keys, and the
# regular expressions in ASM_REDACT_PATTERNS, which also apply to stored events).
ASM_LOG_FORMAT: str = env.str("ASM_LOG_FORMAT", default="text" if DEBUG else "json")
if ASM_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("ASM_LOG_FORMAT must be 'json' or 'text'")
ASM_REDACT_PATTERNS: list[str] = env.list("ASM_REDACT_PATTERNS", default=[])
# Audit log of control actions (sessions.audit); off only for benchmarks.
ASM_AUDIT_ENABLED: bool = env.bool("ASM_AUDIT_ENABLED", default=True)

# OpenTelemetry spans (docs/telemetry.md): exported over OTLP/HTTP to this base URL (+
# /v1/traces) when set, by web and worker processes alike; needs the `otel` extra (pip
# install 'asm[otel]'; start fails naming it when missing). Unset: tracing is a no-op.
OTEL_EXPORTER_OTLP_ENDPOINT: str = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
# The full URL spans are sent to (used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT).
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: str = env.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default="")
# The `service.name` of exported spans.
OTEL_SERVICE_NAME: str = env.str("OTEL_SERVICE_NAME", default="asm")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "asm_project.logging.ContextFilter"},
        "redact": {"()": "asm_project.logging.RedactFilter"},
    },
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [session=%(session_id)s "
            "run=%(run_id)s] %(message)s"
        },
        "json": {"()": "asm_project.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": ASM_LOG_FORMAT,
            "filters": ["context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("ASM_LOG_LEVEL", default="INFO")},
}
