"""The README's pictures of the operators' dashboard, ``docs/dashboard.png`` (the overview) and
``docs/dashboard-jobs.png`` (the jobs view), made anew.

Starts ``workerfacing-api serve`` on the embedded default in a throwaway folder (a free port on
127.0.0.1), fills the queue the way the DECODE clients would (jobs submitted, pulled, one
finished, one failed, one running, one that no worker fits), signs an operator in with Debian's
Chromium (Playwright, ``/usr/bin/chromium``; never a browser download), waits for the page to
show it all, and saves the page; then opens the jobs view, ticks the failed jobs as an operator
about to retry them would, and saves that too. The tests never write into the repository; run
this when the dashboard changes:

    uv run python devtools/dashboard_screenshot.py [--out docs/dashboard.png] \
        [--jobs-out docs/dashboard-jobs.png]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.bodies import job_document  # noqa: E402

from workerfacing_api.adapters.identity import LocalIssuer  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--jobs-out", type=Path, default=ROOT / "docs" / "dashboard-jobs.png")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="wf-screenshot-") as folder:
        home = Path(folder)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))},
            "USER_DATA_ROOT_PATH": str(home / "user_data"),
            "LOCAL_STATE_DIR": str(home / "state"),
            "QUEUE_DB_URL": f"sqlite:///{home / 'state' / 'queue.db'}",
        }
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workerfacing_api.entrypoints.cli",
                "serve",
                "--port",
                str(port),
            ],
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url}/health/live", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    if time.monotonic() > deadline:
                        sys.exit("serve did not answer within 30 s")
                    time.sleep(0.1)
            picture(url, home, args.out, args.jobs_out)
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    print(f"wrote {args.out} and {args.jobs_out}")


def picture(url: str, home: Path, out: Path, jobs_out: Path) -> None:
    issuer = LocalIssuer(home / "state" / "identity.key")
    key = (home / "state" / "internal-api-key").read_text().strip()

    def token(name: str, group: str) -> str:
        return issuer.mint(name, [group], timedelta(hours=1), datetime.now(UTC))

    def call(method: str, path: str, worker: str | None = None, **kw: Any) -> Any:
        headers = {"x-api-key": key} if worker is None else {}
        if worker is not None:
            headers["Authorization"] = f"Bearer {token(worker, 'workers')}"
        response = requests.request(method, f"{url}{path}", headers=headers, timeout=10, **kw)
        response.raise_for_status()
        return response.json() if response.content else None

    root = str(home / "user_data" / "alice")
    for job_id in (1, 2, 3):
        call("POST", "/_jobs", json=job_document(job_id, root=root))
    waiting = job_document(4, root=root, hardware={"gpu_mem": 40_000})
    call("POST", "/_jobs", json=waiting)
    pulled = {}
    for worker in ("gpu-box-1", "gpu-box-2", "gpu-box-3"):
        ((queue_id, _),) = call("GET", "/jobs", worker, params={"memory": 64_000}).items()
        pulled[worker] = queue_id
        call("PUT", f"/jobs/{queue_id}/status", worker, params={"status": "running"})
    call("PUT", f"/jobs/{pulled['gpu-box-1']}/status", "gpu-box-1", params={"status": "finished"})
    details = "CUDA error: no kernel image is available for execution on the device"
    params = {"status": "error", "runtime_details": details}
    call("PUT", f"/jobs/{pulled['gpu-box-2']}/status", "gpu-box-2", params=params)

    def more_for_the_jobs_view() -> None:
        """More waiting, and a second failure on another box (after the overview's picture)."""
        for job_id in (5, 6, 7):
            call("POST", "/_jobs", json=job_document(job_id, root=root, environment=None))
        ((late, _),) = call("GET", "/jobs", "gpu-box-4", params={"memory": 32_000}).items()
        oom = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
        call(
            "PUT",
            f"/jobs/{late}/status",
            "gpu-box-4",
            params={"status": "error", "runtime_details": oom},
        )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/ui")
        page.locator("input[name=token]").fill(token("ops-alice", "operators"))
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("state-error")).to_have_text("1", timeout=WAIT_MS)
        expect(page.get_by_test_id("failures-table")).to_contain_text("CUDA", timeout=WAIT_MS)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)

        more_for_the_jobs_view()
        page.get_by_test_id("nav-jobs").click()
        rows = page.get_by_test_id("job-row")
        expect(rows).to_have_count(7, timeout=WAIT_MS)
        for row in rows.filter(
            has=page.get_by_test_id("job-row-status").get_by_text("error")
        ).all():
            row.get_by_role("checkbox").check()
        expect(page.get_by_test_id("retry-selected")).to_have_text("Retry selected (2)")
        jobs_out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(jobs_out), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
