"""The operators' dashboard over HTTP, against a real ``serve`` (ARCHITECTURE §7): sign-in by form
and its session cookie, who is refused, the page and its assets, and the JSON the page reads as the
queue moves. (The session across processes, requests from other sites and the headers of every
answer are tested in this process: ``test_dashboard_session.py``.)"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import Server, as_json

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e


def operator_session(server: Server, name: str = "olga") -> requests.Session:
    """A browser's session after signing in through the form."""
    session = requests.Session()
    answer = session.post(
        f"{server.url}/ui/session",
        data={"token": server.token(name, ("operators",))},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303, answer.text
    return session


def overview(session: requests.Session, server: Server) -> dict[str, Any]:
    answer = session.get(f"{server.url}/ui/api/overview", timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = as_json(answer)
    return body


def raw_get(server: Server, path: str) -> int:
    """GET ``path`` exactly as written (no client normalises its dots)."""
    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_signing_in_sets_a_strict_session_cookie_and_opens_the_page(server: Server) -> None:
    anonymous = requests.get(f"{server.url}/ui", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].endswith("/ui/login")
    login = requests.get(f"{server.url}/ui/login", timeout=10)
    assert login.status_code == 200
    assert login.headers["content-type"].startswith("text/html")
    assert 'name="token"' in login.text

    session = requests.Session()
    answer = session.post(
        f"{server.url}/ui/session",
        data={"token": server.token("olga", ("operators",))},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/ui")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("wf_session=")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain http here; over https it is Secure

    page = session.get(f"{server.url}/ui", allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert overview(session, server)["jobs_by_state"]["queued"] == 0


def test_the_cookie_is_secure_behind_a_trusted_https_proxy_only(
    server_factory: Callable[..., Server],
) -> None:
    def cookie_attributes(server: Server) -> set[str]:
        answer = requests.post(
            f"{server.url}/ui/session",
            data={"token": server.token("olga", ("operators",))},
            headers={"X-Forwarded-Proto": "https"},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 303
        return {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}

    # Behind a proxy of TRUSTED_PROXIES, its X-Forwarded-Proto is the request's scheme.
    assert "secure" in cookie_attributes(server_factory({"TRUSTED_PROXIES": "127.0.0.1"}))
    # From anybody else it is a header like any other: the request came over plain http.
    assert "secure" not in cookie_attributes(server_factory(name="untrusted"))


def test_non_operators_and_strangers_are_refused(server: Server) -> None:
    refused = requests.post(
        f"{server.url}/ui/session",
        data={"token": server.token("worker-1", ("workers",))},
        headers={"Accept": "application/json"},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.status_code == 403
    assert as_json(refused)["detail"] == "user 'worker-1' is not in group 'operators'"
    # No session: at most the cookie that clears one (Litestar's "null").
    assert refused.cookies.get("wf_session") in {None, "null"}
    # A browser's form gets a page saying so.
    page = requests.post(
        f"{server.url}/ui/session",
        data={"token": server.token("worker-1", ("workers",))},
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=10,
    )
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "not in group" in page.text
    bad = requests.post(
        f"{server.url}/ui/session", data={"token": "not-a-token"}, allow_redirects=False, timeout=10
    )
    assert bad.status_code == 401
    empty = requests.post(f"{server.url}/ui/session", data={}, allow_redirects=False, timeout=10)
    assert empty.status_code == 401

    for path in ("/ui/api/overview", "/ui/api/jobs/1"):
        nobody = requests.get(f"{server.url}{path}", timeout=10)
        assert nobody.status_code == 401
        assert "sign in" in as_json(nobody)["detail"]
        worker = requests.get(f"{server.url}{path}", headers=server.auth(), timeout=10)
        assert worker.status_code == 403
        assert "not in group 'operators'" in as_json(worker)["detail"]
    forged = requests.get(
        f"{server.url}/ui/api/overview", cookies={"wf_session": "eyJ1c2VyIjoieCJ9.00"}, timeout=10
    )
    assert forged.status_code == 401
    # An operator's bearer token works without a session (scripts, the browser test).
    bearer = requests.get(
        f"{server.url}/ui/api/overview", headers=server.auth("olga", ("operators",)), timeout=10
    )
    assert bearer.status_code == 200


def test_signing_out_ends_the_session_and_clears_the_cookie(server: Server) -> None:
    session = operator_session(server)
    signed_in = session.cookies["wf_session"]
    answer = session.post(f"{server.url}/ui/logout", allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/ui/login")
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith("wf_session=null;")  # Litestar's cleared session
    assert "path=/ui" in cookie
    assert session.get(f"{server.url}/ui", allow_redirects=False, timeout=10).status_code == 303
    assert session.get(f"{server.url}/ui/api/overview", timeout=10).status_code == 401
    # The cookie of the session, replayed (copied before the sign-out), reads nothing either.
    replayed = requests.get(
        f"{server.url}/ui/api/overview", cookies={"wf_session": signed_in}, timeout=10
    )
    assert replayed.status_code == 401


def test_assets_are_served_by_name_only(server: Server) -> None:
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        answer = requests.get(f"{server.url}/ui/static/{name}", timeout=10)
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
        assert answer.headers["cache-control"] == "no-cache"
    for path in (
        "/ui/static/..%2Fapp.py",
        "/ui/static/../../x",
        "/ui/static/..%2F..%2F__init__.py",
        "/ui/static/%2Fetc%2Fpasswd",
        "/ui/static/nothing.js",
    ):
        assert raw_get(server, path) == 404, path


def test_the_overview_follows_the_queue(server: Server) -> None:
    session = operator_session(server)
    before = overview(session, server)
    assert len(before["throughput"]) == 60
    assert before["oldest_queued_age_seconds"] is None
    assert before["upstream"] == {
        "configured": False,
        "healthy": True,
        "outbox_backlog": 0,
        "oldest_event_age_seconds": None,
    }

    big = server.job_body()
    big["job"]["hardware"]["gpu_mem"] = 40000
    server.submit(big)  # queue id 1: waits, no worker has the GPU memory
    server.submit()  # 2
    server.submit()  # 3
    queued = overview(session, server)
    assert queued["jobs_by_state"]["queued"] == 3
    assert queued["oldest_queued_age_seconds"] >= 0
    # By hardware class, as GET /_demand: no node seen yet, so none can run either class.
    assert {
        (c["gpu_mem"], c["queued"], c["fitting_nodes_seen"], c["no_node_can_run"], c["reason"])
        for c in queued["demand"]["classes"]
    } == {
        (0, 2, 0, 2, "no worker has asked for jobs in the last 15 minutes"),
        (40000, 1, 0, 1, "no worker has asked for jobs in the last 15 minutes"),
    }

    finished_id = int(next(iter(server.pull("gpu-1", gpu_mem=24000))))
    failed_id = int(next(iter(server.pull("gpu-1", gpu_mem=24000))))
    assert {finished_id, failed_id} == {2, 3}
    for status in ("running", "finished"):
        assert server.put_status(finished_id, status, "gpu-1").status_code == 204
    detail = "CUDA error: an illegal memory access was encountered"
    answer = server.put_status(failed_id, "error", "gpu-1", runtime_details=detail)
    assert answer.status_code == 204

    after = overview(session, server)
    states = after["jobs_by_state"]
    assert (states["queued"], states["finished"], states["error"], states["running"]) == (
        1,
        1,
        1,
        0,
    )
    assert set(states) == {
        "queued",
        "pulled",
        "preprocessing",
        "running",
        "postprocessing",
        "finished",
        "error",
        "cancelled",
    }
    throughput = after["throughput"]
    assert len(throughput) == 60
    assert [t["minute"] for t in throughput] == sorted(t["minute"] for t in throughput)
    assert throughput[-1]["minute"].endswith(":00+00:00")
    assert sum(t["pulled"] for t in throughput) == 2
    assert sum(t["finished"] for t in throughput) == 1

    demand = after["demand"]
    assert (demand["queued"], demand["no_node_can_run"], demand["nodes_seen"]) == (1, 1, 1)
    (waiting,) = demand["classes"]
    assert (waiting["environment"], waiting["gpu_mem"], waiting["queued"]) == ("local", 40000, 1)
    assert (waiting["fitting_nodes_seen"], waiting["smallest_fitting_offer"]) == (0, None)
    assert waiting["no_node_can_run"] == 1
    assert waiting["reason"] == (
        "no local worker seen in the last 15 minutes has 40 000 MiB of GPU memory; "
        "the largest has 24 000"
    )
    (gpu,) = after["workers"]
    assert (gpu["account"], gpu["gpu_mem"], gpu["active_jobs"], gpu["set_aside"]) == (
        "gpu-1",
        24000,
        [],
        False,
    )
    (failure,) = after["recent_failures"]
    assert failure["job_id"] == failed_id
    assert (failure["kind"], failure["worker"], failure["runtime_details"]) == (
        "failed",
        "gpu-1",
        detail,
    )

    page = as_json(session.get(f"{server.url}/ui/api/jobs/{failed_id}", timeout=10))
    assert (page["job"]["status"], page["job"]["worker"], page["job"]["runtime_details"]) == (
        "error",
        "gpu-1",
        detail,
    )
    (attempt,) = page["attempts"]
    assert (attempt["attempt"], attempt["worker"], attempt["outcome"]) == (1, "gpu-1", "error")
    assert attempt["ended_at"] is not None
    assert page["pending_events"] == []
    assert page["why"] is None

    waiting_page = as_json(session.get(f"{server.url}/ui/api/jobs/1", timeout=10))
    assert waiting_page["job"]["status"] == "queued"
    assert waiting_page["job"]["hardware"]["gpu_mem"] == 40000
    assert waiting_page["attempts"] == []
    assert "40 000 MiB of GPU memory" in waiting_page["why"]["reason"]


@pytest.mark.parametrize("job_id", ["999", "0", "-1", str(2**70)])
def test_an_unknown_job_is_a_404(server: Server, job_id: str) -> None:
    session = operator_session(server)
    answer = session.get(f"{server.url}/ui/api/jobs/{job_id}", timeout=10)
    assert answer.status_code == 404
    assert "detail" in as_json(answer)
