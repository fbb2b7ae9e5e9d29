"""Under the Content-Security-Policy, staff pages (admin, console, dashboard, report) run their scripts and
raise no violation in Chromium, and a script without the nonce is blocked."""

import pytest
from django.contrib.auth.models import User

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_staff_pages_raise_no_csp_violation(browser, live_server, study):
    User.objects.create_superuser("admin", "a@example.org", "pw")
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    paths = [
        "/admin/", "/admin/studies/study/", "/admin/studies/study/add/", f"/admin/studies/study/{study.pk}/change/",
        "/console/", "/console/studies/", "/console/studies/new/", f"/studies/{study.slug}/dashboard/",
        f"/generation/runs/{study.generation_run_id}/", "/django-rq/",
    ]  # fmt: skip
    for path in paths:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        page.wait_for_load_state("load")
    # The admin's own scripts ran: the change form's inlines have their "Add another" links.
    page.goto(f"{live_server.url}/admin/studies/study/{study.pk}/change/")
    page.get_by_text("Add another Question").wait_for()
    assert not violations, violations
    # The policy is enforced: a script injected without the nonce does not run.
    page.goto(f"{live_server.url}/console/")
    page.evaluate(
        """() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';
                   document.body.appendChild(s); }"""
    )
    assert page.evaluate("() => window.injected") is None
    assert violations
