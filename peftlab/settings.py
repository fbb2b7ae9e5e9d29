"""peftlab's settings, read from the environment with safe defaults.

Commands need no environment: without SECRET_KEY a random key is created once in PEFTLAB_DATA_DIR (mode 0600)
and reused; DEBUG is off unless DEBUG=1; ALLOWED_HOSTS defaults to the loopback names. The production
servers (peftlab.wsgi, peftlab.asgi, `check --deploy`) refuse to start without SECRET_KEY and ALLOWED_HOSTS
from the environment (peftlab.checks). SQLite is the embedded default; set DATABASE_URL (e.g.
postgres://postgres@127.0.0.1:5432/peftlab) for PostgreSQL. REDIS_URL enables the django-rq queues `default`
and `gpu`; without it jobs run in-process.
"""

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def installation_secret_key(path: Path) -> str:
    """This installation's random key, read from `path` or created there once (mode 0600)."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write a private temporary file and link it into place: processes starting together all end up
            # with the one key that was linked first, and nobody ever reads a half-written file.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w") as file:
                    file.write(secrets.token_urlsafe(50))
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return path.read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(
            f"PEFTLAB_DATA_DIR: cannot keep the secret key in {path} ({error.strerror}): point PEFTLAB_DATA_DIR "
            "at a folder this user can write, or export SECRET_KEY=<a long random string>."
        ) from None


def database_from_url(url: str | None, *, default: str, **options: Any) -> dict:
    """The database for DATABASE_URL (PostgreSQL or SQLite), or a one-line error that shows the right form."""
    try:
        config = dj_database_url.parse(url or default, **options)
    except ValueError:
        config = {}
    if config.get("ENGINE") not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
        # Only the scheme is shown: the rest of the URL may hold a password.
        raise ImproperlyConfigured(
            f"DATABASE_URL is not a PostgreSQL or SQLite URL (scheme {urlsplit(url or '').scheme!r}): set it "
            "like postgres://USER:PASSWORD@HOST:5432/NAME or sqlite:////absolute/path/db.sqlite3, or unset it "
            "for SQLite in var/db.sqlite3."
        )
    if config["ENGINE"] == "django.db.backends.sqlite3" and config["NAME"] != ":memory:":
        folder = Path(config["NAME"]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ImproperlyConfigured(
                f"DATABASE_URL: cannot create {folder} for the SQLite database ({error.strerror}): set "
                "DATABASE_URL to sqlite:////a/folder/you/can/write/db.sqlite3 or to a PostgreSQL URL."
            ) from None
        # Background job threads and the web server share the file: wait for locks instead of failing.
        config["OPTIONS"] = {"timeout": 30}
    return config


DEBUG = env_bool("DEBUG", False)
# Where prepared datasets, training runs and caches live unless a command is given another path.
PEFTLAB_DATA_DIR = Path(os.environ.get("PEFTLAB_DATA_DIR", BASE_DIR / "var" / "data"))
# Sessions and tokens must survive restarts, and every machine sharing the database needs the same key.
SECRET_KEY = os.environ.get("SECRET_KEY") or installation_secret_key(PEFTLAB_DATA_DIR / "secret_key")
# Loopback names are safe everywhere: a production server refuses to start unless ALLOWED_HOSTS is given.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
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
    # CSP, Cache-Control and the multipart limit (before anything reads the body): peftlab.security.
    "peftlab.security.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "peftlab.urls"
# None: runserver (local use) builds its own handler; peftlab.wsgi is for production servers and refuses to
# start without SECRET_KEY and ALLOWED_HOSTS from the environment.
WSGI_APPLICATION = None
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
                "peftlab.security.csp_nonce",
            ],
        },
    },
]

# CONN_MAX_AGE is 0 (a connection per request) unless the server sets it: runserver opens a thread per
# request, and persistent connections there pile up past PostgreSQL's limit; gunicorn's worker threads are a fixed
# number, one connection each, so gunicorn.conf.py sets 60.
DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL"),
        default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 600},
    "gpu": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 60 * 60 * 24},
}
# An in-process job (no REDIS_URL) stamps Job.heartbeat_at this often; `jobs reconcile` fails one whose
# stamp is older than PEFTLAB_JOB_STALE_S (its process died), so it can be retried.
PEFTLAB_JOB_HEARTBEAT_S = float(os.environ.get("PEFTLAB_JOB_HEARTBEAT_S", "10"))
PEFTLAB_JOB_STALE_S = float(os.environ.get("PEFTLAB_JOB_STALE_S", "60"))

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
# Who may show participant pages in a frame (CSP frame-ancestors; staff pages are never framed). MTurk's
# ExternalQuestion shows the study inside a frame on these origins.
PEFTLAB_FRAME_ANCESTORS = env_list(
    "PEFTLAB_FRAME_ANCESTORS", "https://www.mturk.com,https://workersandbox.mturk.com"
)
# Staff pages of third-party apps whose templates carry inline scripts without a nonce.
PEFTLAB_CSP_INLINE_SCRIPT_PATHS = ["/django-rq/"]
# No page takes file uploads: a multipart body over this size is refused with 413 before it is read
# (Django's DATA_UPLOAD_MAX_MEMORY_SIZE counts form fields only). The reverse proxy sets a limit too.
PEFTLAB_MAX_MULTIPART_BYTES = int(os.environ.get("PEFTLAB_MAX_MULTIPART_BYTES", str(2 * 1024 * 1024)))

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
        # Every unhandled error (a 500) with its traceback, and refused requests, on stderr with DEBUG off
        # too (Django's own handler prints only with DEBUG on): gunicorn's error log shows them.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django.security": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
