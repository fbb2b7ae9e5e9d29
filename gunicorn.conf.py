"""gunicorn's settings for peftlab (read from the working directory by `gunicorn peftlab.wsgi`; see docs/deploy.md).

Threaded workers (gthread), one per core (WEB_CONCURRENCY) with GUNICORN_THREADS threads each: a thread waits
on the database while another runs, and connections stay open between requests (keep-alive), which sync workers
cannot do. Each thread holds one persistent database connection: size PostgreSQL's max_connections above the
total of workers x threads of every server.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A request that takes longer than this is stuck (participant pages answer in milliseconds).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
# Longer than the proxy's idle timeout for its upstream connections (Caddy 2 min, nginx 60 s): gunicorn must
# never close a kept connection just as the proxy sends the next request on it.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "150"))
# Recycle workers now and then so a slow leak never grows without bound; jitter keeps them from all restarting at once.
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # "" turns it off (benchmarks)
errorlog = "-"
# Behind Caddy/nginx on the same machine: trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# One connection per worker thread, kept for a minute: no connect cost per request and a bounded total,
# workers x threads (settings.py keeps 0, right for runserver's unbounded thread per request).
os.environ.setdefault("CONN_MAX_AGE", "60")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
