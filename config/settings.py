"""Settings, read from the environment.

With nothing set: SQLite in WAL mode (BEGIN IMMEDIATE, STACK-NOTES T8), the django-q2 ORM broker,
an in-memory channel layer. DATABASE_URL switches to PostgreSQL, REDIS_URL turns on the Redis
channel layer, DURABLE_PRODUCTION=1 turns on the production security settings.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


PRODUCTION = env_bool("DURABLE_PRODUCTION")
DEBUG = env_bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = env("SECRET_KEY") or (
    "" if PRODUCTION else "django-insecure-durable-development-key-not-for-production-use-0123456789"
)
if PRODUCTION and not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DURABLE_PRODUCTION=1")
ALLOWED_HOSTS = [h for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_htmx",
    "django_q",
    "ninja",  # its templates and static files serve /api/docs without a CDN
    "durable",
    "runs",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- database -------------------------------------------------------------------------------
SQLITE_PATH = env("DURABLE_SQLITE_PATH", str(BASE_DIR / "var" / "durable.sqlite3"))
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    # Persistent connections: the ORM broker would otherwise open a connection per enqueue (T7).
    # No OPTIONS["pool"]: the pool breaks in forked qcluster processes (T9).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    # One test database per test process, so that concurrent test sessions never share one.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
else:
    Path(SQLITE_PATH).parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            # Persistent, as on PostgreSQL: a worker would otherwise reconnect for every task, and
            # closing the last connection to a WAL database checkpoints it (milliseconds each time).
            "CONN_MAX_AGE": 60,
            "OPTIONS": {
                # DEFERRED transactions that read then write fail at once with "database is
                # locked" whatever the timeout (T8); IMMEDIATE takes the write lock up front.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
            },
            # A file, not :memory:, so that worker processes started by the tests share it.
            # Per test process, so that concurrent test sessions never share one.
            "TEST": {"NAME": env("DURABLE_SQLITE_TEST_PATH", str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- django-q2: the process pool and the wake-up, never the durability (T1) -------------------
Q_CLUSTER = {
    "name": env("DURABLE_Q_NAME", "durable"),
    "orm": "default",
    # the ORM broker with one statement per queue operation (durable/broker.py)
    "broker_class": "durable.broker.Broker",
    "workers": int(env("DURABLE_WORKERS", "2")),
    "queue_limit": int(env("DURABLE_WORKERS", "2")),
    "bulk": 1,
    "poll": env_float("DURABLE_Q_POLL", 0.05),
    # A slice runs at most DURABLE["SLICE_SECONDS"] plus one step; retry stays far above timeout so
    # django-q2's redelivery is a rare safety net, not a second executor (T3).
    "timeout": 3600,
    "retry": 7260,
    "ack_failures": True,
    "max_attempts": 1,
    "save_limit": -1,
    "catch_up": False,
    "guard_cycle": 0.5,
    "daemonize_workers": False,
    "log_level": env("DURABLE_Q_LOG_LEVEL", "WARNING"),
}

# --- the engine -----------------------------------------------------------------------------
DURABLE = {
    "LEASE_SECONDS": env_float("DURABLE_LEASE_SECONDS", 1.5),
    "HEARTBEAT_SECONDS": env_float("DURABLE_HEARTBEAT_SECONDS", 0.4),
    "SWEEP_SECONDS": env_float("DURABLE_SWEEP_SECONDS", 0.25),
    "SLICE_SECONDS": env_float("DURABLE_SLICE_SECONDS", 30.0),
    "REDISPATCH_AFTER_SECONDS": env_float("DURABLE_REDISPATCH_AFTER_SECONDS", 30.0),
    "MAX_RECOVERIES": int(env("DURABLE_MAX_RECOVERIES", "5")),
    "MAX_PAYLOAD_BYTES": int(env("DURABLE_MAX_PAYLOAD_BYTES", str(1024 * 1024))),
    "STEP_TIMEOUT_SECONDS": env_float("DURABLE_STEP_TIMEOUT_SECONDS", 900.0),
    # PostgreSQL ends a worker session idle inside a transaction this long (a frozen worker's locks).
    "IDLE_IN_TRANSACTION_SECONDS": env_float("DURABLE_IDLE_IN_TRANSACTION_SECONDS", 10.0),
}

# --- agents (docs/agents.md) ------------------------------------------------------------------
# API keys are read from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) when a call is made;
# they may also be set here, and are never stored in runs, steps, events or tasks.
DURABLE_AGENTS = {
    "OPENAI_BASE_URL": env("OPENAI_BASE_URL"),  # any OpenAI-compatible server; empty: api.openai.com
    "ANTHROPIC_BASE_URL": env("ANTHROPIC_BASE_URL"),
    "TIMEOUT_SECONDS": env_float("DURABLE_MODEL_TIMEOUT_SECONDS", 60.0),  # per model call
    "MAX_RETRY_AFTER_SECONDS": env_float("DURABLE_MAX_RETRY_AFTER_SECONDS", 600.0),
    # demo agents: "auto" = a real model when OPENAI_API_KEY or ANTHROPIC_API_KEY is set, else scripted
    "DEMO_MODEL": env("DURABLE_DEMO_MODEL", "auto"),
    # USD per million tokens, by "provider:model" or bare model name; unknown models cost 0.
    "PRICES": {
        "gpt-4o-mini": {"input": 0.15, "output": 0.60},
        "gpt-4o": {"input": 2.50, "output": 10.00},
        "claude-3-5-haiku-latest": {"input": 0.80, "output": 4.00},
    },
}

# --- channels -------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout None: redis-py's 5 s default kills idle consumers (T11).
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "capacity": 1000, "expiry": 30},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

_DEFAULT_MAIL = "smtp" if PRODUCTION else "console"
MAILERS = {"default": {"BACKEND": env("EMAIL_BACKEND", f"django.core.mail.backends.{_DEFAULT_MAIL}.EmailBackend")}}
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "durable@localhost")
# Links in notifications point here; the webhook (optional) gets a JSON POST per approval request.
DURABLE_BASE_URL = env("DURABLE_BASE_URL", "http://127.0.0.1:8000")
DURABLE_APPROVAL_WEBHOOK_URL = env("DURABLE_APPROVAL_WEBHOOK_URL")
DURABLE_APPROVAL_WEBHOOK_SECRET = env("DURABLE_APPROVAL_WEBHOOK_SECRET")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "durable": {"handlers": ["console"], "level": env("DURABLE_LOG_LEVEL", "INFO")},
        "django_q": {"handlers": ["console"], "level": Q_CLUSTER["log_level"], "propagate": False},
    },
}

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
