"""Inspector settings. Every value comes from the environment (see docker/.env.example); the defaults
run locally with no external service: SQLite, a filesystem Celery broker, media on local disk."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from inspector.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("INSPECTOR_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
_DEV_SECRET = "insecure-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET)
if not DEBUG and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 32 or "change-me" in SECRET_KEY):
    raise ImproperlyConfigured("DEBUG is off: set SECRET_KEY to a random value of at least 32 characters")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_htmx",
    "axes",
    "inspector.accounts",
    "inspector.products",
    "inspector.inspections",
    "inspector.review",
    "inspector.classifier",
    "inspector.stats",
    "inspector.audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "inspector.security.ContentSecurityPolicyMiddleware",
    # Before anything that reads the body (CsrfViewMiddleware reads POST): refuse an oversized one with 413.
    "inspector.security.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn; media never (access-checked view)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "inspector.audit.context.AuditContextMiddleware",  # who and from where, for audit events
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: turns a lockout into the lockout page
]

ROOT_URLCONF = "inspector.urls"
WSGI_APPLICATION = "inspector.wsgi.application"

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
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'inspector.sqlite3'}"), conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A PostgreSQL restart: a new connection fails within seconds instead of hanging (the task retries, the web
    # answers 500 for that request); CONN_HEALTH_CHECKS (above) replaces a dead persistent connection.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the worker write to one SQLite file: wait for locks instead of failing at once.
    # WAL lets the web server read while the worker writes; IMMEDIATE takes the write lock up front, so two
    # writers queue instead of failing half-way ("database is locked" on lock upgrade).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "product-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
# Media are never served as a public folder: every file goes through a view that checks access.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
# Where media live: "local" (MEDIA_ROOT, the embedded default) or "s3" (any S3-compatible object storage: MinIO,
# AWS S3, ...; django-storages). Several web servers and workers on several machines need "s3" (or one shared
# filesystem mounted at MEDIA_ROOT everywhere). All code goes through default_storage, never a path.
INSPECTOR_MEDIA_STORAGE = env_choice("INSPECTOR_MEDIA_STORAGE", "local", ("local", "s3"))
if INSPECTOR_MEDIA_STORAGE == "s3":
    INSPECTOR_S3_BUCKET = env_str("INSPECTOR_S3_BUCKET", "")
    if not INSPECTOR_S3_BUCKET:
        raise ImproperlyConfigured("INSPECTOR_MEDIA_STORAGE=s3 needs INSPECTOR_S3_BUCKET")
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": INSPECTOR_S3_BUCKET,
            "endpoint_url": env_str("INSPECTOR_S3_ENDPOINT_URL", "") or None,  # e.g. http://minio:9000; unset: AWS
            "region_name": env_str("INSPECTOR_S3_REGION", "") or None,
            # Unset keys: boto3's own chain (instance role, ~/.aws); set them for MinIO.
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "location": env_str("INSPECTOR_S3_PREFIX", ""),  # a key prefix inside the bucket
            "addressing_style": env_choice("INSPECTOR_S3_ADDRESSING_STYLE", "path", ("path", "virtual", "auto")),
            "signature_version": "s3v4",
            "default_acl": None,  # private objects; the bucket policy decides, nothing is public
            "querystring_auth": True,  # never used for serving: media go through the access-checked view
            "file_overwrite": False,  # names are random; never replace an object silently
        },
    }
else:
    _media_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}  # follows MEDIA_ROOT
STORAGES = {
    "default": _media_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# ------------------------------------------------------------------------------------------------ security
# Cookies, HTTPS and headers. Defaults are safe for production (DEBUG off); with DEBUG on (local use) they relax
# to plain HTTP. inspector.security's system check refuses to start with DEBUG off and unsafe values.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=300)  # one shift
CSRF_COOKIE_HTTPONLY = True  # no script reads the cookie: htmx sends the token from the page (hx-headers)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the container health check speaks plain HTTP to 127.0.0.1
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (only if the proxy sets it).
_proxy_ssl = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_ssl and len(_proxy_ssl) != 2:
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl) if _proxy_ssl else None
INSPECTOR_TLS_TERMINATED_UPSTREAM = env_bool("INSPECTOR_TLS_TERMINATED_UPSTREAM", False)  # proxy redirects to HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
INSPECTOR_CSP_REPORT_ONLY = env_bool("INSPECTOR_CSP_REPORT_ONLY", False)
INSPECTOR_CSP_REPORT_URI = env_str("INSPECTOR_CSP_REPORT_URI", "")
SILENCED_SYSTEM_CHECKS = env_list("SILENCED_SYSTEM_CHECKS", [])

# Log-in: django-axes locks an address out after AXES_FAILURE_LIMIT failed log-ins for AXES_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "inspector.accounts.views.locked_out"
AXES_CLIENT_IP_CALLABLE = "inspector.security.client_ip"
AXES_VERBOSE = False
# Addresses or networks of reverse proxies whose X-Forwarded-For is believed (comma-separated); empty: none.
INSPECTOR_TRUSTED_PROXIES = env_list("INSPECTOR_TRUSTED_PROXIES", [])

# Uploads: limits checked before anything is queued.
INSPECTOR_MAX_FILE_BYTES = env_int("INSPECTOR_MAX_FILE_BYTES", 50 * 2**20, minimum=1)
INSPECTOR_MAX_PIXELS = env_int("INSPECTOR_MAX_PIXELS", 40_000_000, minimum=1)
INSPECTOR_MAX_FILES_PER_UPLOAD = env_int("INSPECTOR_MAX_FILES_PER_UPLOAD", 2000, minimum=1)
INSPECTOR_MAX_ZIP_BYTES = env_int("INSPECTOR_MAX_ZIP_BYTES", 2 * 2**30, minimum=1)  # uncompressed total
DATA_UPLOAD_MAX_NUMBER_FILES = INSPECTOR_MAX_FILES_PER_UPLOAD
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 2**20
# Per request, files included (RequestSizeLimitMiddleware answers 413); form fields and JSON bodies alone are
# capped by DATA_UPLOAD_MAX_MEMORY_SIZE.
INSPECTOR_MAX_REQUEST_BYTES = env_int("INSPECTOR_MAX_REQUEST_BYTES", 1 * 2**30, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 2**20, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# Detection engine
INSPECTOR_WEIGHTS = Path(
    env_str("INSPECTOR_WEIGHTS", str(Path.home() / ".cache/inspector/resnet50_imagenet.safetensors"))
)
INSPECTOR_DETECTOR_METHOD = env_str("INSPECTOR_DETECTOR_METHOD", "fastrecon")
INSPECTOR_IMAGE_SIZE = env_int("INSPECTOR_IMAGE_SIZE", 256, minimum=32)

# Celery: embedded default is kombu's filesystem transport (no server); CELERY_BROKER_URL=redis://... in production.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
_broker_dir = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed pool process: its message goes back to the queue (same task id)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")
# Redis redelivers an unacknowledged message after the visibility timeout: it must exceed the hard time limit, or
# a slow image would be delivered to a second worker while the first still works on it.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT")
# Fitting a support set: DFD trains (minutes on a CPU), so the fit task has its own, longer limit; the broker
# must not redeliver it while it runs.
INSPECTOR_FIT_TIME_LIMIT = env_int("INSPECTOR_FIT_TIME_LIMIT", 1800, minimum=60)
if CELERY_VISIBILITY_TIMEOUT <= INSPECTOR_FIT_TIME_LIMIT + 60:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must exceed INSPECTOR_FIT_TIME_LIMIT + 60")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    # kombu polls the folder once a second by default: a 1 s wait per image (measured 993 ms/image).
    {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.01,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        # A Redis restart: fail fast and reconnect rather than hang on a dead socket.
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }
)
# Workers and beat reconnect to the broker forever (None: no retry limit), also when it is down at start.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Fitting has its own queue so a new support set is not stuck behind a 2000-image batch.
# Fitting and training share the "fit" queue: neither waits behind a large batch, and a batch does not wait
# behind them. Re-classification is short per image and stays on the default queue.
# Detection can go to its own queue (e.g. "gpu", consumed by workers on GPU machines with -c 1); by default it
# shares the "celery" queue with re-classification and the reaper.
INSPECTOR_DETECT_QUEUE = env_str("INSPECTOR_DETECT_QUEUE", "celery")
CELERY_TASK_ROUTES = {
    "inspector.products.tasks.support_set_fit_task": {"queue": "fit"},
    "inspector.review.tasks.classifier_train_task": {"queue": "fit"},
    "inspector.inspections.tasks.inspection_process_task": {"queue": INSPECTOR_DETECT_QUEUE},
}
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Task modules outside the apps' tasks.py (which autodiscovery finds): the top-floor reaper.
CELERY_IMPORTS = ["inspector.reaper"]
# The reaper (inspector.reaper.work_reap_task, task name "inspector.inspections.tasks.work_reap_task", run by
# Celery beat every INSPECTOR_REAP_EVERY seconds)
# rescues work a lost worker left behind: running longer than INSPECTOR_LOST_AFTER (must exceed the hard time
# limit: a running task is never reaped) goes back to the queue; queued longer than INSPECTOR_REQUEUE_AFTER is
# sent again (a broker restart without persistence loses its messages; the claim makes duplicates harmless).
INSPECTOR_REAP_EVERY = env_int("INSPECTOR_REAP_EVERY", 60, minimum=1)
INSPECTOR_LOST_AFTER = env_int("INSPECTOR_LOST_AFTER", CELERY_TASK_TIME_LIMIT + 60, minimum=1)
if INSPECTOR_LOST_AFTER <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("INSPECTOR_LOST_AFTER must exceed CELERY_TASK_TIME_LIMIT")
INSPECTOR_REQUEUE_AFTER = env_int("INSPECTOR_REQUEUE_AFTER", 1800, minimum=1)
# What follows the detection of a flagged image, in the same task (dotted paths of functions called with
# inspection_id=...): named here, not imported, because inspections sits below the apps that use its results.
INSPECTOR_AFTER_FLAGGED = ["inspector.classifier.services.classify_new_inspection"]
# Review loop: a new classifier version is trained after this many new confirmed labels of a product.
INSPECTOR_RETRAIN_EVERY = env_int("INSPECTOR_RETRAIN_EVERY", 10, minimum=1)
INSPECTOR_REVIEW_LEASE_SECONDS = env_int("INSPECTOR_REVIEW_LEASE_SECONDS", 120, minimum=5)
# /metrics (Prometheus): staff users, or a scraper sending "Authorization: Bearer <this token>"; unset: staff only.
INSPECTOR_METRICS_TOKEN = env_str("INSPECTOR_METRICS_TOKEN", "")
CELERY_BEAT_SCHEDULE = {
    "work-reap": {
        "task": "inspector.inspections.tasks.work_reap_task",
        "schedule": float(INSPECTOR_REAP_EVERY),
        "options": {"expires": float(INSPECTOR_REAP_EVERY)},  # runs missed while workers were away are dropped
    }
}
CELERY_TASK_IGNORE_RESULT = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: its WWW-Authenticate makes a request without credentials 401 (the session class would give 403).
        "inspector.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "inspector.api_errors.ApiSchema",
    "EXCEPTION_HANDLER": "inspector.api_errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Inspector API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request and response components apart: uploads are then `format: binary` in multipart bodies (not URIs).
    "COMPONENT_SPLIT_REQUEST": True,
    # <id:...> in URLs (inspector.params.DbIdConverter): an object id within PostgreSQL's integer range
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 2147483647}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
