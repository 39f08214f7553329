"""The operator dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real ``serve``: sign-in refuses a non-operator, an operator sees the counts
move as jobs are submitted, pulled and finished (by the page's own refresh, never a reload),
opens a failed job from the failures table and reads its details, all under the service's
Content-Security-Policy with no violation in the console; reads the demand by hardware class (a
class a node seen fits, and one no node can run, with why) and when a queued job may start; and
an operator finds failed jobs in the jobs view and retries two at once, releases a node the
fleet set aside and fails a running job with a reason, each confirmed first, heard by the
upstream (a fake user-facing API in its own process) and shown in the audit log; and a page of
another site (a tiny server on another port of 127.0.0.1, reached as ``127.0.0.1`` and as
``localhost``) can neither sign the browser in or out with a form it submits, nor show the
sign-in page in a frame. (The README's screenshots, ``docs/dashboard.png`` and
``docs/dashboard-jobs.png``, are made by ``devtools/dashboard_screenshot.py``: a test writes
nothing into the repository.)

Playwright's own browser download is never used: the test launches ``/usr/bin/chromium``
(``apt-get install chromium``). Without it the test skips, except with ``CI=true``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from tests.integration.conftest import Server, Upstream, upstream_env

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

WAIT_MS = 15_000  # the page refreshes every 5 s; three refreshes is plenty


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A static web server on another port of 127.0.0.1: the folder it serves, and its port."""
    folder = tmp_path / "other-site"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def csp_violations(messages: list[ConsoleMessage]) -> list[str]:
    """Chromium's console lines that report a Content-Security-Policy violation."""
    return [m.text for m in messages if "Content Security Policy" in m.text]


def sign_in(page: Page, server: Server, token: str) -> None:
    page.goto(f"{server.url}/ui")
    expect(page).to_have_url(f"{server.url}/ui/login")
    page.locator("input[name=token]").fill(token)
    page.get_by_role("button", name="Sign in").click()


def queue_id(server: Server, meta_job_id: int) -> int:
    """The queue's id of a submitted job (the dashboard's links use it), as ``explain`` tells."""
    response = requests.get(
        f"{server.url}/_jobs/{meta_job_id}/explain",
        headers={"x-api-key": server.api_key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found: int = response.json()["queue_id"]
    return found


@pytest.mark.slow
def test_operator_watches_the_queue_and_reads_a_failed_job(
    server_factory: Callable[..., Server], browser: Browser
) -> None:
    server = server_factory()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))

    # A worker's token is refused at sign-in, with the server's reason on the page.
    worker_token = server.token("gpu-box-1", groups=("workers",))
    sign_in(page, server, worker_token)
    expect(page.get_by_test_id("login-error")).to_contain_text("operators", timeout=WAIT_MS)
    page.goto(f"{server.url}/ui")
    expect(page).to_have_url(f"{server.url}/ui/login")

    operator_token = server.token("ops-alice", groups=("operators",))
    sign_in(page, server, operator_token)
    expect(page).to_have_url(f"{server.url}/ui", timeout=WAIT_MS)
    expect(page.get_by_test_id("state-queued")).to_have_text("0", timeout=WAIT_MS)
    expect(page.get_by_test_id("oldest-queued")).to_have_text("nothing queued")

    # Submitted jobs show up without a reload: the page fetches the overview every 5 s.
    for _ in range(3):
        server.submit()
    big = server.job_body()
    big["job"]["hardware"]["gpu_mem"] = 40000  # more GPU memory than any worker here has
    server.submit(big)
    waiting_id = queue_id(server, big["job"]["meta"]["job_id"])
    expect(page.get_by_test_id("state-queued")).to_have_text("4", timeout=WAIT_MS)

    finished_id, failed_id, running_id = (
        next(iter(server.pull("gpu-box-1").keys())),
        next(iter(server.pull("gpu-box-2").keys())),
        next(iter(server.pull("gpu-box-3").keys())),
    )
    for job_id, worker in ((finished_id, "gpu-box-1"), (failed_id, "gpu-box-2")):
        assert server.put_status(job_id, "running", worker).status_code == 204
    assert server.put_status(running_id, "running", "gpu-box-3").status_code == 204
    assert server.put_status(finished_id, "finished", "gpu-box-1").status_code == 204
    details = "CUDA error: no kernel image is available for execution on the device"
    response = server.put_status(failed_id, "error", "gpu-box-2", runtime_details=details)
    assert response.status_code == 204

    expect(page.get_by_test_id("state-finished")).to_have_text("1", timeout=WAIT_MS)
    expect(page.get_by_test_id("state-error")).to_have_text("1", timeout=WAIT_MS)
    expect(page.get_by_test_id("state-running")).to_have_text("1", timeout=WAIT_MS)
    expect(page.get_by_test_id("state-queued")).to_have_text("1", timeout=WAIT_MS)
    workers = page.get_by_test_id("workers-table")
    expect(workers).to_contain_text("gpu-box-3", timeout=WAIT_MS)
    expect(workers.get_by_role("link", name=f"#{running_id}")).to_be_visible()
    expect(page.get_by_test_id("demand-reason")).to_contain_text("GPU memory", timeout=WAIT_MS)
    failures = page.get_by_test_id("failures-table")
    expect(failures).to_contain_text("CUDA error: no kernel image", timeout=WAIT_MS)
    chart = page.get_by_test_id("throughput-chart")
    expect(chart.locator("desc")).to_have_text("3 pulled and 1 finished in the last hour")
    expect(page.get_by_test_id("upstream")).to_contain_text("outbox backlog")
    expect(page.get_by_test_id("last-refresh")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    expect(page.get_by_test_id("error-banner")).to_be_hidden()

    # The failed job, opened from the failures table, tells what went wrong and where.
    page.get_by_test_id(f"failure-link-{failed_id}").click()
    expect(page).to_have_url(f"{server.url}/ui#/jobs/{failed_id}")
    expect(page.get_by_test_id("job-status")).to_have_text("error", timeout=WAIT_MS)
    expect(page.get_by_test_id("job-details")).to_have_text(details)
    expect(page.locator("#job")).to_contain_text("gpu-box-2")
    expect(page.get_by_test_id("job-why")).to_have_count(0)

    # A queued job that no worker fits says why it waits.
    page.goto(f"{server.url}/ui#/jobs/{waiting_id}")
    expect(page.get_by_test_id("job-status")).to_have_text("queued", timeout=WAIT_MS)
    expect(page.get_by_test_id("job-why")).to_contain_text("GPU memory")
    page.get_by_test_id("back").click()
    expect(page.get_by_test_id("state-error")).to_have_text("1", timeout=WAIT_MS)

    # Signing out ends the session: the dashboard sends back to the sign-in page.
    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(f"{server.url}/ui/login", timeout=WAIT_MS)
    page.goto(f"{server.url}/ui")
    expect(page).to_have_url(f"{server.url}/ui/login")

    # The tokens travelled in request bodies only, never in an address (history, logs).
    leaked = [u for u in urls if worker_token in u or operator_token in u]
    assert leaked == []
    assert script_errors == []
    # All of it ran under the service's policy (no inline script or style), which the browser
    # enforced without a single refusal.
    login = page.goto(f"{server.url}/ui/login")
    assert login is not None
    assert login.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert csp_violations(console) == []


def test_operator_reads_the_demand_by_class_and_when_a_job_may_start(
    server: Server, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))

    # One node is seen (it pulls and finishes a job); three jobs of the class it fits wait
    # behind, and one needs more GPU memory than it has.
    metas = [int(server.submit()["job"]["meta"]["job_id"]) for _ in range(4)]
    big = server.job_body()
    big["job"]["hardware"]["gpu_mem"] = 40000
    server.submit(big)
    done = next(iter(server.pull("gpu-box-1", gpu_mem=24000, gpu_model="RTX")))
    for status in ("running", "finished"):
        assert server.put_status(done, status, "gpu-box-1").status_code == 204

    sign_in(page, server, server.token("ops-alice", groups=("operators",)))
    expect(page).to_have_url(f"{server.url}/ui", timeout=WAIT_MS)
    rows = page.get_by_test_id("demand-row")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    fitting = rows.filter(has_not=page.get_by_test_id("demand-reason"))
    expect(fitting.get_by_test_id("demand-class")).to_have_text("local · any")
    expect(fitting.get_by_test_id("demand-queued")).to_have_text("3")
    expect(fitting.get_by_test_id("demand-fitting")).to_have_text("1")
    expect(fitting.get_by_test_id("demand-offer")).to_have_text(
        "8 cores · 64\u2009000 MiB · GPU RTX 24\u2009000 MiB"
    )
    expect(fitting.get_by_test_id("demand-unrunnable")).to_have_text("0")
    unrunnable = rows.filter(has=page.get_by_test_id("demand-reason"))
    expect(unrunnable.get_by_test_id("demand-queued")).to_have_text("1")
    expect(unrunnable.get_by_test_id("demand-fitting")).to_have_text("0")
    expect(unrunnable.get_by_test_id("demand-offer")).to_have_text("—")
    expect(unrunnable.get_by_test_id("demand-reason")).to_have_text(
        "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
        "the largest has 24 000"
    )
    expect(page.get_by_test_id("demand-summary")).to_contain_text(
        "4 queued in 2 classes; 1 that no node can run; 1 node(s) seen"
    )

    # The last of them waits behind two: the page says so, and when it may start (from how
    # long the node that fits it took a job), in the explanation's own words.
    last = queue_id(server, metas[-1])
    page.goto(f"{server.url}/ui#/jobs/{last}")
    expect(page.get_by_test_id("job-status")).to_have_text("queued", timeout=WAIT_MS)
    expect(page.get_by_test_id("job-why")).to_contain_text("2 job(s) come before it in line")
    answer = requests.get(
        f"{server.url}/ui/api/jobs/{last}",
        headers={"Authorization": f"Bearer {server.token('ops-alice', groups=('operators',))}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    estimate = answer.json()["why"]["estimate"]
    assert isinstance(estimate, str)
    assert "expected to start in about" in estimate
    expect(page.get_by_test_id("job-estimate")).to_have_text(estimate)
    assert script_errors == []


def test_a_late_answer_never_paints_over_the_page_opened_since(
    server: Server, browser: Browser
) -> None:
    first, second = (queue_id(server, int(server.submit()["job"]["meta"]["job_id"])) for _ in "ab")
    page = browser.new_page()
    sign_in(page, server, server.token("ops-alice", groups=("operators",)))
    expect(page).to_have_url(f"{server.url}/ui", timeout=WAIT_MS)

    # The first job's answer is held back until the operator has opened the second job.
    held: list[Route] = []
    page.route(f"**/ui/api/jobs/{first}", lambda route: held.append(route))
    page.goto(f"{server.url}/ui#/jobs/{first}")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the first job's page never asked for its data"
    page.goto(f"{server.url}/ui#/jobs/{second}")
    heading = page.locator("#job h1")
    expect(heading).to_contain_text(f"Job #{second}", timeout=WAIT_MS)

    # The second page's own refreshes are held from now on, so none can paint over a wrong page.
    page.route(f"**/ui/api/jobs/{second}", lambda route: held.append(route))
    with page.expect_request_finished(lambda r: r.url.endswith(f"/ui/api/jobs/{first}")):
        held[0].continue_()
    page.wait_for_timeout(500)  # the page reads the late answer in a task or two, not 500 ms
    expect(heading).to_contain_text(f"Job #{second}")
    expect(page.get_by_test_id("error-banner")).to_be_hidden()


def test_a_page_of_another_site_cannot_sign_in_or_out_or_frame_the_dashboard(
    server: Server, browser: Browser, other_site: tuple[Path, int]
) -> None:
    folder, port = other_site
    attacker = server.token("mallory", groups=("operators",))

    def auto_submit(action: str, fields: str = "") -> str:
        return (
            f"<!doctype html><form method=post action='{server.url}{action}'>{fields}</form>"
            "<script>document.forms[0].submit()</script>"
        )

    (folder / "sign-in.html").write_text(
        auto_submit("/ui/session", f"<input name=token value='{attacker}'>")
    )
    (folder / "sign-out.html").write_text(auto_submit("/ui/logout"))
    (folder / "frame.html").write_text(f"<!doctype html><iframe src='{server.url}/ui/login'>")
    # The same site on another port (SameSite cookies go along), and another site.
    origins = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")

    page = browser.new_page()
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))

    # Login CSRF: the form posts the attacker's operator token from the victim's browser.
    for origin in origins:
        with page.expect_response(f"{server.url}/ui/session") as answer:
            page.goto(f"{origin}/sign-in.html")
        assert answer.value.status == 403, origin
        expect(page.locator("body")).to_contain_text("another site")
        page.goto(f"{server.url}/ui")
        expect(page).to_have_url(f"{server.url}/ui/login")  # not signed in as anybody

    # Signed in for real, the victim stays so whatever another page posts.
    sign_in(page, server, server.token("ops-alice", groups=("operators",)))
    expect(page).to_have_url(f"{server.url}/ui", timeout=WAIT_MS)
    for origin in origins:
        with page.expect_response(f"{server.url}/ui/logout") as answer:
            page.goto(f"{origin}/sign-out.html")
        assert answer.value.status == 403, origin
        page.goto(f"{server.url}/ui")
        expect(page).to_have_url(f"{server.url}/ui")
        expect(page.get_by_test_id("state-queued")).to_have_text("0", timeout=WAIT_MS)

    # Nor can another page show the sign-in page inside its own (clickjacking).
    for origin in origins:
        with page.expect_console_message(lambda m: "frame-ancestors" in m.text):
            page.goto(f"{origin}/frame.html")
        expect(page.frame_locator("iframe").locator("input[name=token]")).to_have_count(0)
    assert all("frame-ancestors" in text for text in csp_violations(console))


def test_operator_finds_failed_jobs_and_acts_on_them(
    server_factory: Callable[..., Server], upstream: Upstream, browser: Browser
) -> None:
    server = server_factory(upstream_env(upstream))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))

    # gpu-good finishes a job; gpu-bad fails three in a row, and the fleet sets it aside.
    def job_on(worker: str) -> tuple[int, int]:
        meta = int(server.submit()["job"]["meta"]["job_id"])
        (queue_id,) = server.pull(worker)
        assert server.put_status(queue_id, "running", worker).status_code == 204
        return meta, int(queue_id)

    _, done = job_on("gpu-good")
    assert server.put_status(done, "finished", "gpu-good").status_code == 204
    failed: dict[int, int] = {}  # queue id -> meta.job_id
    for _ in range(3):
        meta, queue_id = job_on("gpu-bad")
        answer = server.put_status(queue_id, "error", "gpu-bad", runtime_details="CUDA: boom")
        assert answer.status_code == 204
        failed[queue_id] = meta
    assert server.pull("gpu-bad") == {}  # set aside
    running_meta, running = job_on("gpu-good")

    sign_in(page, server, server.token("ops-alice", groups=("operators",)))
    expect(page).to_have_url(f"{server.url}/ui", timeout=WAIT_MS)
    expect(page.get_by_test_id("state-error")).to_have_text("3", timeout=WAIT_MS)

    # The jobs view, filtered to failed jobs: the three of gpu-bad, newest first.
    page.get_by_test_id("nav-jobs").click()
    page.get_by_test_id("filter-state").select_option("error")
    page.get_by_test_id("filter-apply").click()
    expect(page).to_have_url(f"{server.url}/ui#/jobs?state=error")
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(3, timeout=WAIT_MS)
    newest_first = sorted(failed, reverse=True)
    for row, queue_id in zip(rows.all(), newest_first, strict=True):
        expect(row.get_by_test_id(f"job-link-{queue_id}")).to_be_visible()
        expect(row).to_contain_text("CUDA: boom")

    # Two of them retried at once, confirmed first.
    retried = newest_first[:2]
    for queue_id in retried:
        page.get_by_test_id(f"select-{queue_id}").check()
    bulk = page.get_by_test_id("retry-selected")
    expect(bulk).to_have_text("Retry selected (2)")
    bulk.click()
    expect(page.get_by_test_id("confirm-message")).to_contain_text(f"#{retried[0]}, #{retried[1]}")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("confirm")).to_be_hidden()
    expect(page.get_by_test_id("action-summary")).to_have_text("2 of 2 job(s) retried.")
    for queue_id in retried:
        meta = failed[queue_id]
        upstream.wait_for(lambda: upstream.statuses(meta)[-1:] == ["queued"])  # noqa: B023
    expect(rows).to_have_count(1, timeout=WAIT_MS)  # the view refreshed: one still failed

    # The node the fleet set aside, released from the overview; the queued jobs of its class
    # are one click from the demand panel.
    page.get_by_test_id("nav-overview").click()
    bad_node = page.get_by_test_id("node-row").filter(has_text="gpu-bad")
    release = bad_node.get_by_role("button", name="Release")
    expect(release).to_be_visible(timeout=WAIT_MS)
    release.click()
    expect(page.get_by_test_id("confirm-message")).to_contain_text("gpu-bad")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("action-summary")).to_contain_text("1 of 1 node(s)")
    expect(bad_node.get_by_test_id("node-aside")).to_have_text("no (1 strikes)", timeout=WAIT_MS)
    page.get_by_test_id("demand-class-link").click()
    expect(page).to_have_url(f"{server.url}/ui#/jobs?state=queued&class=local%3A0%3A0%3A0%3A%3A")
    expect(page.get_by_test_id("filter-class")).to_have_value("local:0:0:0::")
    expect(rows).to_have_count(2, timeout=WAIT_MS)

    # The running job, failed on the operator's word with a reason.
    page.get_by_test_id("filter-state").select_option("running")
    page.get_by_test_id("filter-class").fill("")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    page.get_by_test_id(f"job-link-{running}").click()
    expect(page.get_by_test_id("job-status")).to_have_text("running", timeout=WAIT_MS)
    page.get_by_test_id("job-fail").click()
    reason = "wrong calibration file: resubmit with the one of 3 December"
    page.get_by_test_id("confirm-ok").click()  # no reason yet: asked for one, nothing done
    expect(page.get_by_test_id("confirm-error")).to_contain_text("Say why")
    page.get_by_test_id("confirm-reason").fill(reason)
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("action-summary")).to_have_text("1 of 1 job(s) failed.")
    expect(page.get_by_test_id("action-result")).to_contain_text(
        "failed (it was running on worker gpu-good)"
    )
    expect(page.get_by_test_id("job-status")).to_have_text("error", timeout=WAIT_MS)
    upstream.wait_for(
        lambda: any(
            e["job_id"] == running_meta
            and e["status"] == "error"
            and e.get("runtime_details") == reason
            for e in upstream.events()
        )
    )
    ping = server.put_status(running, "running", "gpu-good")
    assert ping.status_code == 404, ping.text  # the worker stops

    # Each action in the audit log: who, what, which jobs.
    page.get_by_test_id("nav-audit").click()
    entries = page.get_by_test_id("audit-row")
    expect(entries).to_have_count(3, timeout=WAIT_MS)
    expect(entries.get_by_test_id("audit-actor")).to_have_text(["ops-alice"] * 3)
    expect(entries.get_by_test_id("audit-action")).to_have_text(["fail", "release", "retry"])
    expect(entries.nth(0).get_by_test_id("audit-detail")).to_contain_text(reason)
    expect(entries.nth(1)).to_contain_text("released")
    expect(entries.nth(2).get_by_test_id("audit-target")).to_have_text(
        f"{retried[0]}, {retried[1]}"
    )
    assert script_errors == []
    assert csp_violations(console) == []
