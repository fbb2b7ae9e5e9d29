"""Benchmark: N participants walk one study at once over HTTP, against gunicorn on PostgreSQL (all on 127.0.0.1).

Each participant (a locust user) opens the study link, consents (reporting a phone's or a laptop's viewport and
touch, with that browser's User-Agent), reads the instructions, answers every page after an exponential think
time (mean --think seconds) with the browser's time on the page (client_ms), sends a share of answers twice at
the same instant (a double click), fetches each image as a browser would (once per URL: the server marks them
cacheable), leaves feedback and finishes. The study is capped at --participants (the admission lock runs). Printed: p50/p95/p99 per kind of request, errors, answers accepted (the page
moved on) vs stored (rows in the database), duplicates, and the server's worker RSS and first request.

    .venv/bin/python benchmarks/participants.py --participants 200 --think 3
    .venv/bin/python benchmarks/participants.py profile --walks 10    # CPU ms and queries per kind, in-process

It drops and recreates its own database (--database, default wt_serve_bench) on 127.0.0.1:5432, migrates it,
builds a study of --prompts prompts x 3 arms with 512 px stimuli, and stops after --max-seconds at the latest.
gunicorn runs as gunicorn.conf.py sets it up unless --workers/--worker-class/--threads say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything else: the benchmark loads a machine, it must be this one
SLUG = "bench"
KINDS = ("entry", "consent", "page", "answer", "image", "finish")
# What the participants' browsers report at consent: (viewport, touch, User-Agent).
DEVICES = (
    ("390x844", "1", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    ("1280x800", "0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36"),
)  # fmt: skip


# ---------------------------------------------------------------- in a Django subprocess


def django_setup() -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
    import django

    django.setup()


def prepare(prompts: int, max_participants: int | None = None) -> None:
    """Build the study: `prompts` prompts x base/lora/ti, 512 px stimuli, the reference questions, open, capped."""
    django_setup()
    import io

    from django.core.files.base import ContentFile

    from generation.models import GeneratedImage, GenerationRun, Prompt, PromptSet
    from studies.models import Study
    from studies.services import study_create_from_generation

    prompt_set = PromptSet.objects.create(name="bench")
    arms = ["base", "lora", "ti"]
    run = GenerationRun.objects.create(
        name="bench", status=GenerationRun.Status.FINISHED, prompt_set=prompt_set, arms=arms
    )
    rng = random.Random(0)
    for position in range(prompts):
        references = []
        for number in range(2):
            references.append(stimulus_store(f"references/bench-{position}-{number}.png", rng, ContentFile))
        prompt = Prompt.objects.create(
            prompt_set=prompt_set, position=position, landmark=f"L{position}", text="t", reference_images=references
        )
        for arm in arms:
            buffer = io.BytesIO()
            stimulus(rng).save(buffer, format="PNG")
            image = GeneratedImage(run=run, arm=arm, prompt=prompt, seed=0, rendered_prompt="t", sha256="0" * 64)
            image.image.save("x.png", ContentFile(buffer.getvalue()), save=False)
            image.width = image.height = 512
            image.save()
    study_create_from_generation(
        run=run, arms=arms, slug=SLUG, status=Study.Status.OPEN, max_participants=max_participants
    )


def stimulus(rng: random.Random):
    """A 512 px image with gradients and noise: compresses about as badly as a rendered one."""
    from PIL import Image

    noise = [Image.effect_noise((512, 512), 24) for _ in range(3)]
    base = Image.linear_gradient("L").resize((512, 512)).rotate(rng.randrange(360))
    return Image.merge("RGB", [Image.blend(base, layer, 0.4) for layer in noise])


def stimulus_store(name: str, rng: random.Random, content_file) -> str:
    import io

    from django.core.files.storage import default_storage

    buffer = io.BytesIO()
    stimulus(rng).save(buffer, format="PNG")
    return default_storage.save(name, content_file(buffer.getvalue()))


def count() -> None:
    """Print the database's view of the run as JSON: participants, finished, answers stored, duplicates."""
    django_setup()
    from django.db.models import Count

    from studies.models import Participant, Response

    responses = Response.objects.filter(participant__study__slug=SLUG)
    duplicates = (
        responses.values("participant", "trial", "question").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    participants = Participant.objects.filter(study__slug=SLUG)
    print(
        json.dumps(
            {
                "participants": participants.count(),
                "finished": participants.filter(finished_at__isnull=False).count(),
                "stored": responses.count(),
                "duplicates": duplicates,
                "client_ms": responses.filter(client_ms__isnull=False).count(),
                "devices": participants.exclude(viewport_width=None).exclude(browser_family="").count(),
            }
        )
    )


def profile(walks: int, top: int) -> None:
    """Walk `walks` participants in-process (Django's test Client) and print CPU ms and SQL queries per request kind."""
    os.environ.setdefault("CONN_MAX_AGE", "60")  # as under gunicorn (gunicorn.conf.py): no connect per request
    django_setup()
    import cProfile
    import pstats

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    cpu: dict[str, list[float]] = defaultdict(list)
    queries: dict[str, list[int]] = defaultdict(list)
    profiler = cProfile.Profile()

    def call(client: Client, kind: str, method: str, url: str, **data):
        with CaptureQueriesContext(connection) as captured:
            before = time.process_time()
            if top:
                profiler.enable()
            response = getattr(client, method)(url, data or None)
            profiler.disable()
            cpu[kind].append((time.process_time() - before) * 1000)
        queries[kind].append(len(captured))
        return response

    fields = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')
    for number in range(walks):
        client = Client(HTTP_HOST=HOST)
        entry = f"/studies/{SLUG}/?PROLIFIC_PID=profile{number}{secrets.token_hex(4)}&STUDY_ID=s&SESSION_ID=x"
        html = call(client, "entry", "get", entry).content.decode()
        url = call(client, "consent", "post", entry, **dict(fields.findall(html)), decision="agree")["Location"]
        seen: set[str] = set()
        while True:
            html = call(client, "page", "get", url).content.decode()
            for src in re.findall(r'<img src="([^"]+)"', html):
                if src not in seen:
                    seen.add(src)
                    call(client, "image", "get", src)
            data = dict(fields.findall(html))
            if "step" not in data:
                break
            if 'name="feedback"' in html:
                call(client, "finish", "post", url, **data, feedback="fine")
                continue
            check = re.search(r"choose the image on the (left|right)", html)
            call(client, "answer", "post", url, **data, choice=check.group(1) if check else "left")
    print(f"{'kind':<8} {'requests':>8} {'CPU ms':>7} {'queries':>7}")
    for kind in KINDS:
        if cpu[kind]:
            print(
                f"{kind:<8} {len(cpu[kind]):>8} {statistics.mean(cpu[kind]):>7.2f} "
                f"{statistics.mean(queries[kind]):>7.1f}"
            )
    if top:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


# ---------------------------------------------------------------- the server


def database_reset(url: str) -> None:
    """Drop and recreate the benchmark's own database, then migrate it."""
    name = url.rsplit("/", 1)[1]
    if not name.startswith("wt_serve"):
        sys.exit(f"refusing to drop {name!r}: the benchmark only recreates databases named wt_serve*")
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-qc", sql], check=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=REPO, check=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def server_cpu_seconds(master: int) -> float:
    """User + system CPU time used by gunicorn's workers so far, those recycled (max_requests) included."""

    def stat(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    ticks = sum(int(field) for field in stat(master)[13:15])  # children the master has reaped
    for pid in workers_of(master):
        try:
            ticks += sum(int(field) for field in stat(pid)[11:13])
        except FileNotFoundError:  # exited between the listing and the read
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def server_start(args: argparse.Namespace, env: dict) -> tuple[subprocess.Popen, float, float]:
    """gunicorn as gunicorn.conf.py sets it up, with the worker options given; (process, seconds until /healthz
    answers, first entry page in s)."""
    port = args.port
    started = time.perf_counter()
    options = ["--workers", str(args.workers)] if args.workers else []
    options += ["--worker-class", args.worker_class] if args.worker_class else []
    options += ["--threads", str(args.threads)] if args.threads else []
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "peftlab.wsgi", "--config", "gunicorn.conf.py",
         "--bind", f"{HOST}:{port}", *options, "--no-control-socket"],
        cwd=REPO, env=env,
    )  # fmt: skip
    while time.perf_counter() - started < 120:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=30) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    else:
        server.terminate()
        sys.exit("gunicorn did not answer /healthz within 120 s")
    ready = time.perf_counter() - started
    before = time.perf_counter()
    with urllib.request.urlopen(f"http://{HOST}:{port}/studies/{SLUG}/", timeout=30) as response:
        response.read()
    return server, ready, time.perf_counter() - before


# ---------------------------------------------------------------- the participants


def run_participants(args: argparse.Namespace, base: str) -> tuple[dict, dict, int]:
    """Walk args.participants participants; (latencies in ms by kind, counters, seconds taken)."""
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment
    from locust.exception import StopUser

    latencies: dict[str, list[float]] = defaultdict(list)
    counters: dict[str, int] = defaultdict(int)
    errors: list[str] = []

    def record(request_type, name, response_time, response_length, exception=None, **kw) -> None:
        latencies[name].append(response_time)
        if exception:
            errors.append(f"{request_type} {name}: {exception}"[:200])

    class Participant(FastHttpUser):
        host = base
        wait_time = constant(0)

        def on_start(self) -> None:
            # Never follow redirects: locust toggles this per request, which races between a double click's
            # two posts (one of them then follows the redirect and reads as a 200).
            self.client.client.redirect_response_codes = frozenset()

        def expect(self, method: str, url: str, name: str, status: int, **kwargs):
            with self.client.request(method, url, name=name, catch_response=True, **kwargs) as response:
                if response.status_code != status:
                    response.failure(f"{response.status_code} instead of {status}")
                return response

        def fields(self, html: str) -> dict[str, str]:
            return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))

        def think(self) -> float:
            seconds = min(random.expovariate(1 / args.think), 10 * args.think) if args.think else 0
            gevent.sleep(seconds)
            return seconds

        @task
        def walk(self) -> None:
            entry = f"/studies/{SLUG}/?PROLIFIC_PID=bench{secrets.token_hex(6)}&STUDY_ID=s&SESSION_ID=x"
            html = self.expect("GET", entry, "entry", 200).text
            self.think()
            device = random.choice(DEVICES)
            consent = {**self.fields(html), "decision": "agree", "viewport": device[0], "touch": device[1]}
            url = self.expect("POST", entry, "consent", 302, data=consent, headers={"User-Agent": device[2]})
            url = url.headers.get("Location", "")
            seen: set[str] = set()
            answered_step = None  # the step of the answer just posted, to see whether the page moved on
            while url:
                html = self.expect("GET", url, "page", 200).text or ""
                fields = self.fields(html)
                if answered_step is not None:
                    counters["accepted"] += fields.get("step") != answered_step
                    answered_step = None
                for src in re.findall(r'<img src="([^"]+)"', html):
                    if src not in seen:  # Cache-Control: private, max-age=3600
                        seen.add(src)
                        self.expect("GET", src, "image", 200)
                if "step" not in fields:
                    break
                thought = self.think()
                if 'id="trial-form"' in html:
                    check = re.search(r"choose the image on the (left|right)", html)
                    data = {**fields, "choice": check.group(1) if check else random.choice(["left", "right"])}
                    data["client_ms"] = str(round(thought * 1000))
                    kind, answered_step = "answer", fields["step"]
                elif 'name="feedback"' in html:
                    data, kind = {**fields, "feedback": "fine\r\nthanks"}, "finish"
                else:
                    data, kind = fields, "answer"
                posts = 2 if random.random() < args.double_clicks else 1
                counters["double_clicks"] += posts - 1
                gevent.joinall([gevent.spawn(self.expect, "POST", url, kind, 302, data=data) for _ in range(posts)])
                if kind == "finish":
                    counters["finished"] += 1
                    self.expect("GET", url, "page", 200)
                    break
            raise StopUser()

    env = Environment(user_classes=[Participant])
    env.events.request.add_listener(record)
    runner = env.create_local_runner()
    started = time.perf_counter()
    runner.start(args.participants, spawn_rate=args.spawn_rate)
    gevent.sleep(1)
    while runner.user_count and time.perf_counter() - started < args.max_seconds:
        gevent.sleep(1)
    runner.quit()
    counters["errors"] = len(errors)
    for line in sorted(set(errors))[:10]:
        print("error:", line)
    return latencies, counters, round(time.perf_counter() - started)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "prepare", "count", "profile"])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--think", type=float, default=3.0, help="mean think time per page, seconds")
    parser.add_argument("--double-clicks", type=float, default=0.1, help="share of answers posted twice")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--worker-class", default="", help="gunicorn worker class (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=0, help="threads per gthread worker (default: gunicorn.conf.py's)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts in the study (x 3 pairs x 3 questions)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="participants arriving per second")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database", default="wt_serve_bench")
    parser.add_argument("--walks", type=int, default=5, help="profile: participants walked in-process")
    parser.add_argument("--top", type=int, default=0, help="profile: print cProfile's top N functions")
    args = parser.parse_args()
    if args.mode == "prepare":
        return prepare(args.prompts, args.participants)
    if args.mode == "count":
        return count()

    media = tempfile.mkdtemp(prefix="peftlab-bench-media-")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@{HOST}:5432/{args.database}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": HOST,
        "SECURE_COOKIES": "0",  # plain http on 127.0.0.1
        "MEDIA_ROOT": media,
        "GUNICORN_ACCESS_LOG": "",
        "DEBUG": "0",
    }
    os.environ.update(env)
    load_before = os.getloadavg()
    database_reset(env["DATABASE_URL"])
    subprocess.run(
        [sys.executable, __file__, "prepare", "--prompts", str(args.prompts), "--participants", str(args.participants)],
        check=True,
    )
    if args.mode == "profile":
        try:
            return profile(args.walks, args.top)
        finally:
            shutil.rmtree(media, ignore_errors=True)
    server, first_seconds, first_latency = server_start(args, env)
    try:
        idle_rss = [rss_mb(pid) for pid in workers_of(server.pid)]
        server_cpu = server_cpu_seconds(server.pid)
        client_cpu = time.process_time()
        # Imported here: locust patches the standard library with gevent.
        latencies, counters, seconds = run_participants(args, f"http://{HOST}:{args.port}")
        client_cpu = time.process_time() - client_cpu
        server_cpu = server_cpu_seconds(server.pid) - server_cpu
        busy_rss = [rss_mb(pid) for pid in workers_of(server.pid)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(media, ignore_errors=True)
    stored = json.loads(
        subprocess.run(
            [sys.executable, __file__, "count"], check=True, capture_output=True, text=True
        ).stdout.splitlines()[-1]
    )
    print(
        f"\n{args.participants} participants, think {args.think} s (mean), {args.double_clicks:.0%} double clicks, "
        f"gunicorn {args.workers or 'default'} {args.worker_class or 'default'} workers"
        f"{f' x {args.threads} threads' if args.threads else ''}, PostgreSQL, {os.cpu_count()} cores, {seconds} s"
    )
    print(f"{'kind':<8} {'requests':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for kind in KINDS:
        values = latencies.get(kind, [])
        if values:
            print(
                f"{kind:<8} {len(values):>8} {percentile(values, .5):>7.0f} {percentile(values, .95):>7.0f} "
                f"{percentile(values, .99):>7.0f} {max(values):>7.0f}"
            )
    question_pages = args.prompts * 3 * 3 + 2
    print(
        f"errors {counters['errors']}; participants {stored['participants']} started, {stored['finished']} finished "
        f"(client saw {counters['finished']}); answers accepted {counters['accepted']}, stored {stored['stored']} "
        f"(expected {question_pages} x finished = {question_pages * stored['finished']}), "
        f"duplicates {stored['duplicates']}, double clicks sent {counters['double_clicks']}; recorded: client_ms on "
        f"{stored['client_ms']} answers, viewport and browser of {stored['devices']} participants"
    )
    print(
        f"gunicorn answered /healthz {first_seconds:.2f} s after start; the first participant page then took "
        f"{first_latency * 1000:.0f} ms; "
        f"worker RSS MB idle {statistics.mean(idle_rss):.0f}, after the run "
        f"{', '.join(f'{value:.0f}' for value in busy_rss)}"
    )
    requests = sum(len(values) for values in latencies.values())
    print(
        f"CPU used: gunicorn workers {server_cpu:.0f} s ({server_cpu / requests * 1000:.1f} ms per request), "
        f"this client {client_cpu:.0f} s, over {seconds} s on {os.cpu_count()} cores"
    )
    print(
        f"load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} (client and server share the cores)"
    )


if __name__ == "__main__":
    main()
