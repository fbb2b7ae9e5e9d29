"""gunicorn's settings for peftlab (read from the working directory by `gunicorn peftlab.wsgi`; see docs/deploy.md).

Sync workers, a fixed number of them (WEB_CONCURRENCY, default 2 x cores + 1), each holding one persistent
database connection: size PostgreSQL's max_connections above the total of every server's workers.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
# A request that takes longer than this is stuck (participant pages answer in milliseconds).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so a slow leak never grows without bound; jitter keeps them from all restarting at once.
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # "" turns it off (benchmarks)
errorlog = "-"
# Behind Caddy/nginx on the same machine: trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# One connection per sync worker, kept for a minute: no connect cost per request and a bounded total
# (settings.py keeps 0, right for runserver's thread per request).
os.environ.setdefault("CONN_MAX_AGE", "60")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
