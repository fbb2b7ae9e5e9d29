"""peftlab's settings, read from the environment with safe defaults.

DEBUG is off unless DEBUG=1; with DEBUG off SECRET_KEY must be set and the usual production guards apply.
SQLite is the embedded default; set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/peftlab) for
PostgreSQL. REDIS_URL enables the django-rq queues `default` and `gpu`; without it jobs run in-process.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable (1/true/yes/on)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: export SECRET_KEY=<a long random string>, or DEBUG=1."
        )
    SECRET_KEY = "django-insecure-peftlab-development-only"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver serves static files the way gunicorn + whitenoise do.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    "peftlab",
    "trainer",
    "generation",
    "studies",
    "analysis",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from the web process (no media: stimuli go only through studies' token view).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "peftlab.urls"
WSGI_APPLICATION = "peftlab.wsgi.application"
ASGI_APPLICATION = "peftlab.asgi.application"

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

# CONN_MAX_AGE is 0 (a connection per request) unless the server sets it: runserver opens a thread per
# request, and persistent connections there pile up past PostgreSQL's limit; gunicorn's sync workers hold one
# connection each, so gunicorn.conf.py sets 60.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Background job threads and the web server share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 600},
    "gpu": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 60 * 60 * 24},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start until collectstatic ran
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Images, adapters and run artifacts; on several machines this must be shared storage (see docs/jobs.md).
# No URL serves MEDIA_ROOT: stimuli reach participants only through studies' token view, staff see images
# through staff-only views.
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
# Where prepared datasets, training runs and caches live unless a command is given another path.
PEFTLAB_DATA_DIR = Path(os.environ.get("PEFTLAB_DATA_DIR", BASE_DIR / "var" / "data"))

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    # HSTS pins browsers to HTTPS for this host: opt in once TLS works (docs/deploy.md sets a year).
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Trust X-Forwarded-Proto only behind a proxy that sets it (Caddy, nginx): otherwise any client could claim
# HTTPS.
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "peftlab": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "trainer": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "generation": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "studies": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "analysis": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "console": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    },
}
