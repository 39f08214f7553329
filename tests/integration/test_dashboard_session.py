"""The dashboard's session and what every answer carries (ARCHITECTURE §7, docs/RELIABILITY.md,
finding 3), in this process over both databases (``db_api``): a session lives in the queue's
database, so signing out in one process ends it in every other, and a cookie replayed afterwards
reads nothing; a request from another site can neither sign a browser in nor out, and leaves no
session behind; every answer of the dashboard and of the API, errors included, carries the security
headers and one charset.

The browser's side of the same (a cross-site form in real Chromium, no CSP violation in the
console) is in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers
from litestar import Litestar

from tests.inprocess import API_KEY, Api, assemble, serving
from workerfacing_api.entrypoints.http import create_app
from workerfacing_api.entrypoints.http.app import DOCS_PAGES, DOCS_POLICY

COOKIE = "wf_session"
# The headers every answer carries, exactly.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
# What a browser sends with a form another site made it post (the test client is at
# http://testserver.local).
CROSS_SITE = {
    "origin on another site": {"Origin": "https://evil.example"},
    "fetch metadata cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    "fetch metadata same-site": {
        "Sec-Fetch-Site": "same-site",
        "Origin": "http://a.testserver.local",
    },
    "sandboxed frame": {"Origin": "null"},
    "cross-site without an origin": {"Sec-Fetch-Site": "cross-site"},
}
SAME_ORIGIN = {
    "fetch metadata": {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver.local"},
    "origin only": {"Origin": "http://testserver.local"},
    "a script (no origin)": {},
}


def operator_token(api: Api, name: str = "olga") -> str:
    return api.auth(name, ("operators",))["Authorization"].removeprefix("Bearer ")


def session_cookie(answer: httpx.Response) -> str | None:
    """The session id a sign-in answer sets, or None (no cookie, or one that clears it)."""
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";")[0]
        if name == COOKIE and value and value != "null":
            return value
    return None


async def sign_in(api: Api, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    answer = await api.client.post(
        "/ui/session",
        data={"token": token},
        headers={"Accept": "application/json", **(headers or {})},
        follow_redirects=False,
    )
    api.client.cookies.clear()  # each request below says which cookie it sends
    return answer


async def signed_in(api: Api) -> str:
    answer = await sign_in(api, operator_token(api))
    assert answer.status_code == 303, answer.text
    cookie = session_cookie(answer)
    assert cookie is not None
    return cookie


async def with_cookie(api: Api, method: str, path: str, cookie: str, **kw: Any) -> httpx.Response:
    headers = {"Cookie": f"{COOKIE}={cookie}", **kw.pop("headers", {})}
    answer = await api.client.request(method, path, headers=headers, follow_redirects=False, **kw)
    api.client.cookies.clear()
    return answer


async def ui_sessions(api: Api) -> list[tuple[Any, ...]]:
    assert api.stored is not None
    return await api.stored.rows("SELECT key FROM ui_sessions ORDER BY key")


@asynccontextmanager
async def another_process(api: Api, tmp_path: Path) -> AsyncIterator[Api]:
    """A second app over the same database and state directory: another ``serve`` process."""
    url = api.container.settings().queue_db_url
    async with serving(assemble(tmp_path, database=url), api.stored) as other:
        yield other


# --- signing out ends the session everywhere ---------------------------------------------------


async def test_signing_out_ends_the_session_in_every_process(db_api: Api, tmp_path: Path) -> None:
    cookie = await signed_in(db_api)
    assert len(await ui_sessions(db_api)) == 1
    async with another_process(db_api, tmp_path) as other:
        for api in (db_api, other):
            assert (await with_cookie(api, "GET", "/ui/api/overview", cookie)).status_code == 200
            assert (await with_cookie(api, "GET", "/ui", cookie)).status_code == 200

        signed_out = await with_cookie(db_api, "POST", "/ui/logout", cookie)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/ui/login"
        assert session_cookie(signed_out) is None  # the browser's cookie is cleared too
        assert await ui_sessions(db_api) == []

        # The same cookie, replayed to either process, reads nothing.
        for api in (other, db_api):
            for path in ("/ui/api/overview", "/ui/api/jobs/1"):
                replayed = await with_cookie(api, "GET", path, cookie)
                assert replayed.status_code == 401, replayed.text
                assert "sign in" in replayed.json()["detail"]
            page = await with_cookie(api, "GET", "/ui", cookie)
            assert page.status_code == 303
            assert page.headers["location"] == "/ui/login"
        assert await ui_sessions(db_api) == []  # replaying wrote no session back


async def test_a_replayed_cookie_reads_nothing_after_sign_out_on_the_in_memory_queue(
    api: Api,
) -> None:
    cookie = await signed_in(api)
    assert (await with_cookie(api, "GET", "/ui/api/overview", cookie)).status_code == 200
    assert (await with_cookie(api, "POST", "/ui/logout", cookie)).status_code == 303
    assert (await with_cookie(api, "GET", "/ui/api/overview", cookie)).status_code == 401


async def test_a_session_ends_with_the_token_it_was_made_from(db_api: Api) -> None:
    """At most 12 hours, and never beyond the token's own expiry."""
    cookie = await signed_in(db_api)  # the token is good for an hour
    db_api.clock.advance(59 * 60)
    assert (await with_cookie(db_api, "GET", "/ui/api/overview", cookie)).status_code == 200
    db_api.clock.advance(2 * 60)
    assert (await with_cookie(db_api, "GET", "/ui/api/overview", cookie)).status_code == 401
    assert await ui_sessions(db_api) == []


async def test_signing_in_starts_a_new_session_whatever_cookie_the_browser_had(
    db_api: Api,
) -> None:
    """A cookie planted in the browser (another site of the same domain can set one) never
    becomes a signed-in session, and signing in again ends the session signed in before."""
    planted = "a" * 64
    answer = await with_cookie(
        db_api, "POST", "/ui/session", planted, data={"token": operator_token(db_api)}
    )
    assert answer.status_code == 303
    fresh = session_cookie(answer)
    assert fresh is not None
    assert fresh != planted
    assert (await with_cookie(db_api, "GET", "/ui/api/overview", planted)).status_code == 401

    again = await with_cookie(
        db_api, "POST", "/ui/session", fresh, data={"token": operator_token(db_api, "omar")}
    )
    newest = session_cookie(again)
    assert newest is not None
    assert newest != fresh
    assert (await with_cookie(db_api, "GET", "/ui/api/overview", fresh)).status_code == 401
    assert (await with_cookie(db_api, "GET", "/ui/api/overview", newest)).status_code == 200
    assert len(await ui_sessions(db_api)) == 1


async def test_requests_without_a_session_write_none(db_api: Api) -> None:
    """Anonymous pages, refused sign-ins, scripts with a bearer token and made-up cookies leave
    the sessions' table as it was: nobody can fill it without signing in."""
    assert db_api.stored is not None
    before = await db_api.stored.everything()
    cases: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("GET", "/ui", {}),
        ("GET", "/ui/login", {}),
        ("GET", "/ui/static/app.js", {}),
        ("GET", "/ui/api/overview", {}),
        ("GET", "/ui/api/overview", {"headers": db_api.auth("olga", ("operators",))}),
        ("GET", "/ui/api/overview", {"headers": {"x-api-key": API_KEY}}),
        ("POST", "/ui/session", {"data": {"token": "not-a-token"}}),
        ("POST", "/ui/session", {"data": {"token": operator_token(db_api)[:-2]}}),
        ("POST", "/ui/logout", {}),
    )
    for method, path, kw in cases:
        answer = await db_api.client.request(method, path, follow_redirects=False, **kw)
        assert answer.status_code in {200, 303, 401}, (method, path, answer.text)
        assert session_cookie(answer) is None, (method, path)
        made_up = await with_cookie(db_api, method, path, "b" * 64, **kw)
        assert session_cookie(made_up) is None, (method, path)
    assert await db_api.stored.everything() == before


# --- no sign-in or sign-out from another site --------------------------------------------------


async def test_a_cross_site_form_neither_signs_in_nor_out(
    db_api: Api, subtests: pytest.Subtests
) -> None:
    assert db_api.stored is not None
    victim = await signed_in(db_api)
    for case, headers in CROSS_SITE.items():
        with subtests.test(case=case):
            before = await db_api.stored.everything()
            # Login CSRF: the attacker's operator token, posted by the victim's browser (with
            # the victim's cookie, which a sibling site of the same domain gets sent along).
            answer = await with_cookie(
                db_api,
                "POST",
                "/ui/session",
                victim,
                data={"token": operator_token(db_api, "mallory")},
                headers={"Accept": "application/json", **headers},
            )
            assert answer.status_code == 403, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert "another site" in answer.json()["detail"]
            assert "set-cookie" not in answer.headers
            # Sign-out CSRF: the victim's cookie goes along (SameSite does not stop a sibling
            # site of the same domain).
            out = await with_cookie(db_api, "POST", "/ui/logout", victim, headers=headers)
            assert out.status_code == 403, out.text
            assert "another site" in out.json()["detail"]
            assert "set-cookie" not in out.headers
            assert await db_api.stored.everything() == before
            still = await with_cookie(db_api, "GET", "/ui/api/overview", victim)
            assert still.status_code == 200


async def test_the_dashboards_own_pages_and_scripts_sign_in_and_out(
    db_api: Api, subtests: pytest.Subtests
) -> None:
    for case, headers in SAME_ORIGIN.items():
        with subtests.test(case=case):
            answer = await sign_in(db_api, operator_token(db_api), headers)
            assert answer.status_code == 303, answer.text
            cookie = session_cookie(answer)
            assert cookie is not None
            out = await with_cookie(db_api, "POST", "/ui/logout", cookie, headers=headers)
            assert out.status_code == 303, out.text
            assert await ui_sessions(db_api) == []


async def test_every_state_changing_dashboard_route_refuses_another_site(api: Api) -> None:
    """Whatever POST (or other change) the dashboard grows, it is checked: every such route."""
    cookie = await signed_in(api)
    changing = [
        (method, route.path)
        for route in litestar_app(api).routes
        if route.path.startswith("/ui")
        for method in sorted(getattr(route, "methods", ()))
        if method not in {"GET", "HEAD", "OPTIONS"}
    ]
    assert ("POST", "/ui/session") in changing
    assert ("POST", "/ui/logout") in changing
    for method, path in changing:
        answer = await with_cookie(
            api, method, concrete(path), cookie, headers={"Origin": "https://evil.example"}
        )
        assert answer.status_code == 403, (method, path, answer.text)
    assert (await with_cookie(api, "GET", "/ui/api/overview", cookie)).status_code == 200


# --- what every answer carries -----------------------------------------------------------------


def litestar_app(api: Api) -> Litestar:
    """The Litestar app inside what ``create_app`` gives (its routes are the served app's)."""
    app: Any = create_app(api.container, run_duties=False)
    while not isinstance(app, Litestar):
        app = app.app  # the outer ASGI layers (RequestLog, FileIdPaths) hold the next one
    return app


def concrete(path: str) -> str:
    """A route's path with each parameter filled in: ``/ui/api/jobs/{job_id:int}`` ->
    ``/ui/api/jobs/1``; a file path names an asset that exists."""
    kinds = {"int": "1", "path": "app.js"}
    return re.sub(r"\{\w+:(\w+)\}", lambda m: kinds.get(m.group(1), "x"), path)


def assert_secured(answer: httpx.Response, what: str) -> None:
    docs_page = answer.request.url.path in DOCS_PAGES
    for name, value in SECURITY_HEADERS.items():
        if docs_page and name == "content-security-policy":
            value = DOCS_POLICY  # Swagger UI's own page: its inline start-up script
        assert answer.headers.get_list(name) == [value], (what, name, answer.headers)
    content_type = answer.headers.get("content-type", "")
    assert content_type.lower().count("charset") <= 1, (what, content_type)


async def test_every_answer_carries_the_security_headers(api: Api) -> None:
    routes = litestar_app(api).routes
    paths = {route.path for route in routes}
    assert {"/ui", "/ui/login", "/ui/session", "/ui/api/overview", "/jobs", "/_jobs"} <= paths
    assert any(path.startswith("/ui/static/") for path in paths)
    seen = 0
    for route in routes:
        for method in sorted(getattr(route, "methods", ())):
            # Anonymous: most answers are refusals (401, 403, 422), which carry them too.
            answer = await api.client.request(method, concrete(route.path), follow_redirects=False)
            assert_secured(answer, f"{method} {route.path} {answer.status_code}")
            seen += 1
    assert seen > 20

    cookie = await signed_in(api)
    for path in ("/ui", "/ui/api/overview", "/ui/static/app.css", "/ui/static/icon.svg"):
        answer = await with_cookie(api, "GET", path, cookie)
        assert answer.status_code == 200, path
        assert_secured(answer, path)
    for what, answer in {
        "no such route": await api.client.get("/no/such/route"),
        "no such method": await api.client.delete("/health/live"),
        "no such asset": await api.client.get("/ui/static/nothing.js"),
        "a refused sign-in page": await api.client.post(
            "/ui/session", data={"token": "x"}, headers={"Accept": "text/html"}
        ),
        "a cross-site sign-in": await sign_in(api, "x", {"Origin": "https://evil.example"}),
        "the metrics": await api.client.get("/metrics", headers={"x-api-key": API_KEY}),
    }.items():
        assert answer.status_code in {200, 401, 403, 404, 405}, (what, answer.status_code)
        assert_secured(answer, what)


class _Broken:
    """An overview whose every read fails as a bug would."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any) -> Any:
            raise RuntimeError("a bug")

        return fail


async def test_a_server_error_carries_them_too(tmp_path: Path) -> None:
    assembled = assemble(tmp_path)
    assembled.container.overview.override(providers.Object(_Broken()))
    async with serving(assembled) as api:
        answer = await api.client.get("/ui/api/overview", headers={"x-api-key": API_KEY})
        assert answer.status_code == 500
        assert_secured(answer, "500")


async def test_pages_and_assets_have_one_charset_and_their_own_type(api: Api) -> None:
    for path, kind in (
        ("/ui/login", "text/html"),
        ("/ui/static/app.js", "javascript"),
        ("/ui/static/app.css", "text/css"),
        ("/ui/static/icon.svg", "image/svg+xml"),
    ):
        answer = await api.client.get(path)
        assert answer.status_code == 200, path
        assert kind in answer.headers["content-type"], path
        assert answer.headers["cache-control"] == "no-cache", path
    for page in ("/ui/login", "/ui/static/index.html"):
        html = (await api.client.get(page)).text
        # default-src 'self' runs no inline script or style: the pages have none.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
        assert "<style" not in html, page
        assert " style=" not in html, page
