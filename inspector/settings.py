"""Inspector settings. Every value comes from the environment (see docker/.env.example); the defaults
run locally with no external service: SQLite, a filesystem Celery broker, media on local disk."""

from __future__ import annotations

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
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "inspector.products",
    "inspector.inspections",
    "inspector.review",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn; media never (access-checked view)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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

SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True

# Uploads: limits checked before anything is queued.
INSPECTOR_MAX_FILE_BYTES = env_int("INSPECTOR_MAX_FILE_BYTES", 50 * 2**20, minimum=1)
INSPECTOR_MAX_PIXELS = env_int("INSPECTOR_MAX_PIXELS", 40_000_000, minimum=1)
INSPECTOR_MAX_FILES_PER_UPLOAD = env_int("INSPECTOR_MAX_FILES_PER_UPLOAD", 2000, minimum=1)
INSPECTOR_MAX_ZIP_BYTES = env_int("INSPECTOR_MAX_ZIP_BYTES", 2 * 2**30, minimum=1)  # uncompressed total
DATA_UPLOAD_MAX_NUMBER_FILES = INSPECTOR_MAX_FILES_PER_UPLOAD
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 2**20

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
    else {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
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
# The reaper (inspector.inspections.tasks.work_reap_task) rescues work a lost worker left behind.
INSPECTOR_REQUEUE_AFTER = env_int("INSPECTOR_REQUEUE_AFTER", 1800, minimum=60)
# Review loop: a new classifier version is trained after this many new confirmed labels of a product.
INSPECTOR_RETRAIN_EVERY = env_int("INSPECTOR_RETRAIN_EVERY", 10, minimum=1)
INSPECTOR_REVIEW_LEASE_SECONDS = env_int("INSPECTOR_REVIEW_LEASE_SECONDS", 120, minimum=5)
# /metrics (Prometheus): staff users, or a scraper sending "Authorization: Bearer <this token>"; unset: staff only.
INSPECTOR_METRICS_TOKEN = env_str("INSPECTOR_METRICS_TOKEN", "")
CELERY_BEAT_SCHEDULE = {"work-reap": {"task": "inspector.inspections.tasks.work_reap_task", "schedule": 60.0}}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "Inspector API", "VERSION": "1.0.0", "SERVE_INCLUDE_SCHEMA": False}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
