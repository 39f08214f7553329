"""Signed links bind their whole query (ARCHITECTURE §4; docs/RELIABILITY.md, finding 2): a link to
``/upload`` or ``/download`` whose query repeats, adds or lacks a parameter is refused with 401 and
a detail that names the parameter, and nothing is stored; the link as handed out still works, and
the handler acts on exactly the values that were signed.

The probe of the issue: a worker appended ``&base_path=b&type=artifact`` to a signed upload link
for ``output``; the signature covered the first ``base_path`` and ``type``, the handler read the
last, and the file landed in the job's ``artifact/b`` folder (201).

The app is built as ``serve`` builds it, over a real SQLite file and over PostgreSQL (``db_api``),
driven in this process. Each refused case compares the tables, the files under the data root and
what the upstream was told just before and just after its own request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import httpx
import pytest

from tests.inprocess import Api, Stored

HOLDER = "holder-1"  # the worker that pulled the test's job
INTRUDER = "intruder-1"
UPLOAD_KEYS = ("type", "base_path", "worker", "attempt", "expires")
DOWNLOAD_KEYS = ("worker", "expires")
CONTENT = b"\x89HDF\r\n the forged result"


@dataclass(frozen=True)
class Held:
    api: Api
    stored: Stored
    queue_id: str  # a job pulled by HOLDER
    paths_upload: dict[str, str]  # its upload folders by type
    input_file: str  # one of its files_down (an absolute path: the file id)
    data_root: Path  # USER_DATA_ROOT_PATH


@pytest.fixture
async def held(db_api: Api) -> Held:
    api = db_api
    assert api.stored is not None
    submitted = await api.submit(1)
    ((queue_id, job),) = (await api.pull(HOLDER)).items()
    input_file = job["handler"]["files_down"]["data/calib.mat"]
    made = Held(
        api,
        api.stored,
        queue_id,
        submitted["paths_upload"],
        input_file,
        api.user_root.parent,
    )
    # What a refused request must leave as it was is there to compare: not nothing.
    assert (await made.stored.everything())["job_attempts"]
    assert Path(input_file).is_file()
    return made


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under the data root with its content: what a refused request leaves as it was."""
    found: dict[str, bytes] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


# --- links and their queries, edited as raw text -----------------------------------------------


def segments(url: str) -> list[str]:
    """The ``key=value`` segments of ``url``'s query, as written."""
    return urlsplit(url).query.split("&")


def key_of(segment: str) -> str:
    return unquote_plus(segment.partition("=")[0])


def value_in(url: str, key: str) -> str:
    (segment,) = [s for s in segments(url) if key_of(s) == key]
    return unquote_plus(segment.partition("=")[2])


def with_query(url: str, query: list[str]) -> str:
    return urlunsplit(urlsplit(url)._replace(query="&".join(query)))


def appended(url: str, *extra: str) -> str:
    return with_query(url, [*segments(url), *extra])


def prepended(url: str, *extra: str) -> str:
    return with_query(url, [*extra, *segments(url)])


def without(url: str, key: str) -> str:
    return with_query(url, [s for s in segments(url) if key_of(s) != key])


def reordered(url: str) -> str:
    return with_query(url, list(reversed(segments(url))))


def other_signature(url: str) -> str:
    signature = value_in(url, "signature")
    return ("0" if signature[0] != "0" else "1") + signature[1:]


def later(url: str) -> str:
    return str(int(value_in(url, "expires")) + 3600)


def tampered_links(url: str, keys: tuple[str, ...], other: dict[str, str]) -> dict[str, str]:
    """Every way to repeat, add or drop a parameter of the signed ``url``, with what the answer's
    detail must name. ``keys`` are the signed parameters besides the signature; ``other`` gives
    each a value other than the signed one."""
    cases: dict[str, str] = {}
    for key in (*keys, "signature"):
        same = f"{key}={value_in(url, key)}"
        changed = f"{key}={other[key]}"
        cases[f"{key}-repeated-same-value|{key}"] = appended(url, same)
        cases[f"{key}-repeated-other-value|{key}"] = appended(url, changed)
        cases[f"{key}-repeated-before|{key}"] = prepended(url, changed)
        cases[f"{key}-repeated-blank|{key}"] = appended(url, f"{key}=")
        cases[f"{key}-repeated-bare|{key}"] = appended(url, key)
    for key in keys:
        cases[f"{key}-missing|{key}"] = without(url, key)
        # The rest of the link reordered too: the missing parameter is still seen.
        cases[f"{key}-missing-reordered|{key}"] = reordered(without(url, key))
    # A key written another way is the same key once decoded.
    cases["worker-repeated-encoded|worker"] = appended(url, f"w%6Frker={other['worker']}")
    cases["added|runtime_details"] = appended(url, "runtime_details=x")
    cases["added-blank|extra"] = appended(url, "extra=")
    cases["added-before|extra"] = prepended(url, "extra=1")
    # Without its signature the link is a request without credentials.
    cases["signature-missing|authorization"] = without(url, "signature")
    return cases


Send = Callable[[], Awaitable[httpx.Response]]


async def assert_refused(held: Held, send: Send, names: str) -> httpx.Response:
    """``send`` must answer 401 with a JSON detail naming ``names``, and leave the tables, the
    files and what the upstream was told as they were."""
    rows, files = await held.stored.everything(), files_of(held.data_root)
    heard = len(held.api.upstream.calls)
    response = await send()
    assert response.status_code == 401, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = json.loads(response.content)
    assert set(body) == {"detail"}, body
    assert names.lower() in body["detail"].lower(), body
    assert await held.stored.everything() == rows, "a refused request changed the database"
    assert files_of(held.data_root) == files, "a refused request changed the files"
    assert len(held.api.upstream.calls) == heard, "a refused request was told upstream"
    return response


async def upload_link(held: Held, file_type: str = "output", base_path: str = "a") -> str:
    response = await held.api.client.post(
        f"/jobs/{held.queue_id}/files/url",
        params={"type": file_type, "base_path": base_path},
        headers=held.api.auth(HOLDER),
    )
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    assert value_in(url, "worker") == HOLDER
    return url


async def download_link(held: Held) -> str:
    response = await held.api.client.get(
        f"/files/{held.input_file}/url", headers=held.api.auth(HOLDER)
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


def upload_to(held: Held, url: str, name: str = "result.h5", content: bytes = CONTENT) -> Send:
    """The DECODE worker's upload: the link, no token, one multipart field."""

    async def send() -> httpx.Response:
        return await held.api.client.post(url, files={"file": (name, content)})

    return send


def download_from(held: Held, url: str) -> Send:
    async def send() -> httpx.Response:
        return await held.api.client.get(url)

    return send


# --- the probe ---------------------------------------------------------------------------------


async def test_the_probe_a_second_base_path_and_type_appended_to_an_upload_link(
    held: Held,
) -> None:
    link = await upload_link(held, "output", "a")
    probe = appended(link, "base_path=b", "type=artifact")

    response = await assert_refused(held, upload_to(held, probe), "base_path")
    assert "type" in response.json()["detail"]
    assert not Path(held.paths_upload["artifact"]).exists()

    # The link as handed out stores where it was signed for, and only there.
    stored = await upload_to(held, link, content=b"the result")()
    assert stored.status_code == 201, stored.text
    assert (Path(held.paths_upload["output"]) / "a" / "result.h5").read_bytes() == b"the result"
    assert not Path(held.paths_upload["artifact"]).exists()


# --- upload links ------------------------------------------------------------------------------


async def test_an_upload_link_with_a_parameter_repeated_added_or_missing_is_refused(
    held: Held, subtests: pytest.Subtests
) -> None:
    link = await upload_link(held, "output", "a")
    other = {
        "type": "artifact",
        "base_path": "b",
        "worker": INTRUDER,
        "attempt": "2",
        "expires": later(link),
        "signature": other_signature(link),
    }
    for case, url in tampered_links(link, UPLOAD_KEYS, other).items():
        name, _, names = case.partition("|")
        with subtests.test(case=name):
            await assert_refused(held, upload_to(held, url), names)
    assert not list(Path(held.paths_upload["output"]).parent.parent.rglob("result.h5"))


async def test_an_upload_link_for_the_top_folder_binds_its_blank_base_path(held: Held) -> None:
    """``base_path=`` is a parameter like any other: dropping it, or giving a second one, breaks
    the link; as handed out it stores in the top folder of the type."""
    link = await upload_link(held, "log", "")
    assert "base_path=" in segments(link)
    await assert_refused(held, upload_to(held, without(link, "base_path")), "base_path")
    await assert_refused(held, upload_to(held, appended(link, "base_path=b")), "base_path")

    stored = await upload_to(held, link, "worker.log", b"log")()
    assert stored.status_code == 201, stored.text
    assert (Path(held.paths_upload["log"]) / "worker.log").read_bytes() == b"log"
    assert not (Path(held.paths_upload["log"]) / "b").exists()


async def test_an_upload_link_works_as_handed_out_in_any_order_of_its_parameters(
    held: Held,
) -> None:
    link = await upload_link(held, "artifact", "model/run 1")
    for url, content in ((link, b"first"), (reordered(link), b"second")):
        stored = await upload_to(held, url, "model.pt", content)()
        assert stored.status_code == 201, stored.text
        assert stored.json() == {"file": "model.pt", "bytes": len(content)}
        path = Path(held.paths_upload["artifact"]) / "model" / "run 1" / "model.pt"
        assert path.read_bytes() == content


# --- download links ----------------------------------------------------------------------------


async def test_a_download_link_with_a_parameter_repeated_added_or_missing_is_refused(
    held: Held, subtests: pytest.Subtests
) -> None:
    link = await download_link(held)
    other = {"worker": INTRUDER, "expires": later(link), "signature": other_signature(link)}
    for case, url in tampered_links(link, DOWNLOAD_KEYS, other).items():
        name, _, names = case.partition("|")
        with subtests.test(case=name):
            response = await assert_refused(held, download_from(held, url), names)
            assert Path(held.input_file).read_bytes() not in response.content


async def test_a_download_link_works_as_handed_out_in_any_order_of_its_parameters(
    held: Held,
) -> None:
    link = await download_link(held)
    for url in (link, reordered(link)):
        response = await download_from(held, url)()
        assert response.status_code == 200, response.text
        assert response.content == Path(held.input_file).read_bytes()


# --- values no signer wrote ----------------------------------------------------------------------


def replaced(url: str, key: str, value: str) -> str:
    return with_query(url, [f"{key}={value}" if key_of(s) == key else s for s in segments(url)])


async def test_a_link_with_a_forged_signature_or_expiry_is_refused_not_a_server_error(
    held: Held, subtests: pytest.Subtests
) -> None:
    """Each parameter once, but values no signer wrote: a signature that is not ASCII (the
    comparison refuses such text), an expiry that passes ``str.isdigit`` but not ``int`` (a
    superscript two; 5 000 digits)."""
    links = {"upload": await upload_link(held), "download": await download_link(held)}
    forged = {
        "signature-not-ascii": ("signature", "%C3%A9" * 32),
        "expires-superscript": ("expires", "%C2%B2"),
        "expires-5000-digits": ("expires", "9" * 5000),
        "expires-not-a-number": ("expires", "soon"),
    }
    for kind, link in links.items():
        for case, (key, value) in forged.items():
            with subtests.test(link=kind, case=case):
                url = replaced(link, key, value)
                send = upload_to(held, url) if kind == "upload" else download_from(held, url)
                await assert_refused(held, send, f"{kind} link is invalid or expired")
