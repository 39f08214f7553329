"""The API's documentation page (``/docs``, Swagger UI) in a real headless Chromium against a real
``serve``, with every request to anything but 127.0.0.1 refused: the page renders from the
service's own files (no CDN), under its Content-Security-Policy with no violation in the console,
and a newcomer who pastes a worker's token into "Authorize" and tries ``GET /jobs/{job_id}/status``
sees the page send that token and the service answer 200.

Playwright's own browser download is never used: the test launches ``/usr/bin/chromium``
(``apt-get install chromium``). Without it the test skips, except with ``CI=true``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Route, expect

from tests.integration.conftest import Server
from workerfacing_api.entrypoints.http.app import DOCS_POLICY

# Real processes on 127.0.0.1 (serve, a browser): docs/TESTING.md.
pytestmark = pytest.mark.e2e

WAIT_MS = 15_000


def test_docs_render_offline_and_authorize_sends_the_token(
    server: Server, browser: Browser
) -> None:
    # A queued job, named by the Location header of its submission.
    submitted = requests.post(
        f"{server.url}/_jobs",
        json=server.job_body(),
        headers={"x-api-key": server.api_key},
        timeout=10,
    )
    assert submitted.status_code == 201, submitted.text
    location = submitted.headers["location"]
    queue_id = location.removeprefix("/jobs/").removesuffix("/status")
    assert location == f"/jobs/{queue_id}/status"
    assert queue_id.isdigit()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    refused: list[str] = []

    def only_this_machine(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:  # the network is cut off: a CDN, a validator badge, a font
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_machine)
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))

    answer = page.goto(f"{server.url}/docs")
    assert answer is not None
    assert answer.status == 200
    assert answer.headers["content-security-policy"] == DOCS_POLICY

    # The page rendered: the title, and the operations listed.
    expect(page.locator(".info .title")).to_contain_text("worker-facing API", timeout=WAIT_MS)
    operation = page.locator("#operations-default-get_job_status")
    expect(operation).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#operations-default-pull_jobs")).to_be_visible()
    expect(page.locator("#operations-default-submit_job")).to_be_visible()

    # "Authorize" with a worker's token.
    token = server.token("docs-reader")
    page.locator("button.authorize").first.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog).to_be_visible(timeout=WAIT_MS)
    bearer = dialog.locator(".auth-container").filter(has_text="bearerToken")
    bearer.locator("input").fill(token)
    bearer.locator("button.authorize").click()  # its accessible name: "Apply credentials"
    expect(bearer.locator("button", has_text="Logout")).to_be_visible(timeout=WAIT_MS)
    bearer.locator("button.btn-done").click()  # "Close"
    expect(dialog).to_be_hidden(timeout=WAIT_MS)

    # "Try it out" on GET /jobs/{job_id}/status sends the token; the service answers 200.
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("input[placeholder='job_id']").fill(queue_id)
    with page.expect_response(f"{server.url}/jobs/{queue_id}/status") as sent:
        operation.get_by_role("button", name="Execute").click()
    response = sent.value
    assert response.request.headers.get("authorization") == f"Bearer {token}"
    assert response.status == 200
    assert response.json() == "queued"
    expect(operation.locator(".live-responses-table")).to_contain_text("queued", timeout=WAIT_MS)

    assert refused == []
    assert script_errors == []
    assert [m.text for m in console if "Content Security Policy" in m.text] == []
