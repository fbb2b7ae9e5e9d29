"""MTurk in a frame: Chromium shows the study inside a cross-site frame and a worker walks it to the end, with
no cookie reaching our site; staff pages and other sites' frames stay refused."""

import html
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from generation.models import GenerationRun
from studies.models import Participant, Study

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# www.mturk.com's place is taken by a server of the test's own on 127.0.0.1: another site (not only another
# origin) than the live server's localhost, so the browser treats the frame as third-party and keeps
# SameSite=Lax cookies out of it; a loopback address, so Chromium's local-network checks let it frame us.
SUBMIT = "https://www.mturk.com/mturk/externalSubmit"


@pytest.fixture
def seed_open(seed_study_dir) -> Study:
    call_command("import_stimuli", str(seed_study_dir / "manifest.json"))
    call_command(
        "create_study", "--from-generation", GenerationRun.objects.get().pk, "--slug", "seed", "--open",
        "--attention-checks", "1",
    )  # fmt: skip
    return Study.objects.get()


@contextmanager
def requester_site() -> Iterator[str]:
    """A site on 127.0.0.1 whose page /hit?src=URL is a frame showing URL (as MTurk shows an ExternalQuestion)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            src = html.escape(parse_qs(urlsplit(self.path).query)["src"][0])
            body = f'<!doctype html><h1>HIT</h1><iframe id="hit" src="{src}" width="1100" height="900"></iframe>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def requester():
    with requester_site() as url:
        yield url


def framing_page(browser, top: str, framed: str):
    """The requester's page at `top` framing `framed`; MTurk's submit URL answers 'submitted' (posts kept)."""
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    posts: list[str] = []

    def submit(route):
        posts.append(route.request.post_data or "")
        route.fulfill(content_type="text/html", body="submitted")

    page.route(SUBMIT, submit)
    page.goto(f"{top}/hit?src={quote(framed)}")
    return page, posts


def test_a_worker_walks_the_study_to_the_end_inside_a_cross_site_frame(
    browser, live_server, settings, seed_open, requester
):
    settings.PEFTLAB_FRAME_ANCESTORS = [requester]
    query = f"assignmentId=A1&hitId=H1&workerId=W1&turkSubmitTo={quote('https://www.mturk.com')}"
    page, posts = framing_page(browser, requester, f"{live_server.url}/studies/seed/?{query}")
    sent_cookies: list[str] = []
    page.on("request", lambda request: sent_cookies.append(request.headers.get("cookie", "")))
    frame = page.frame_locator("#hit")
    frame.get_by_role("button", name="I agree, start the study").click()
    frame.get_by_role("button", name="Start").click()
    for number in range(1, 5 * 3 + 1 + 1):
        frame.get_by_text(f"Page {number} of 16").wait_for()
        check = re.search(r"choose the image on the (left|right)", frame.locator("#question").inner_text())
        frame.get_by_role("button", name=f"Image on the {check.group(1) if check else 'left'}").click()
    frame.get_by_label("Anything you would like to tell us? (optional)").fill("from a frame")
    frame.get_by_role("button", name="Finish").click()
    assert frame.locator("#completion-code").inner_text() == seed_open.completion_code
    if os.environ.get("PEFTLAB_SHOTS_DIR"):
        page.screenshot(path=str(Path(os.environ["PEFTLAB_SHOTS_DIR"]) / "field-a-mturk-frame-done.png"))
    frame.get_by_role("button", name="Submit the HIT").click()
    frame.get_by_text("submitted").wait_for()
    assert parse_qs(posts[0]) == {"assignmentId": ["A1"], "completion_code": [seed_open.completion_code]}
    participant = Participant.objects.get()
    assert (participant.external_id, participant.external_source) == ("W1", "mturk")
    assert participant.finished_at and participant.feedback == "from a frame"
    assert participant.responses.count() == 16
    # The walk needed no cookie: the browser sent none to our site from inside the frame.
    assert not any(sent_cookies)


def assert_refused(page) -> None:
    """Chromium refused to show the frame's document: it commits its own error page in the frame instead."""
    page.frames[1].wait_for_url(re.compile(r"^chrome-error://"), wait_until="commit")


def test_staff_pages_and_other_sites_cannot_frame_the_study(browser, live_server, settings, seed_open, requester):
    settings.PEFTLAB_FRAME_ANCESTORS = [requester]
    page, _ = framing_page(browser, requester, f"{live_server.url}/studies/seed/")
    # The control: the allowed origin frames the entry page.
    page.frame_locator("#hit").get_by_role("button", name="I agree, start the study").wait_for()
    User.objects.create_superuser("admin", "a@example.org", "pw")
    for path in ("/studies/seed/dashboard/", "/admin/login/"):
        page, _ = framing_page(browser, requester, f"{live_server.url}{path}")
        assert_refused(page)
    with requester_site() as elsewhere:  # another origin, not in PEFTLAB_FRAME_ANCESTORS
        page, _ = framing_page(browser, elsewhere, f"{live_server.url}/studies/seed/")
        assert_refused(page)
