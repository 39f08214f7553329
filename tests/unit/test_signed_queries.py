"""``UrlSigner.verify`` over a query as it came (docs/RELIABILITY.md, finding 2): a name given twice
verifies as no link, whichever occurrence a reader would take; links this release hands out still
verify (the signed text is unchanged); values no signer wrote are refused, never an exception."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from litestar.datastructures import MultiDict

from workerfacing_api.adapters.signing import EXPIRES, SIGNATURE, UrlSigner

NOW = 1_800_000_000.0
PATH = "/jobs/7/files/upload"
PARAMS = {"type": "output", "base_path": "run 1/a+b", "worker": "holder-1", "attempt": "1"}


def query_of(url: str) -> list[tuple[str, str]]:
    """The query of ``url`` as the framework reads it: every occurrence, blank values kept."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_links_handed_out_before_the_fix_still_verify() -> None:
    """Written by the release that had the finding (same key, parameters and time): the signed
    text, and so every link already handed out, is unchanged."""
    signer = UrlSigner("shared-secret", lifetime=600)
    upload = (
        "http://testserver.local/jobs/7/files/upload?type=output&base_path=run+1%2Fa%2Bb"
        "&worker=holder-1&attempt=1&expires=1800000600"
        "&signature=32560792e4b7176d3ad1fea216ee3eec07bda1b55475e7411f133d4b58834f5d"
    )
    download_path = "/files//data/alice/data/1/calib.mat/download"
    download = (
        f"http://testserver.local{download_path}?worker=holder-1&expires=1800000600"
        "&signature=4844f81e8627bc58eee8338d33307e4ef0ade8c1efa6a07eb0da8bb0dc813802"
    )
    assert signer.sign("POST", "http://testserver.local", PATH, PARAMS, NOW) == upload
    worker = {"worker": "holder-1"}
    assert signer.sign("GET", "http://testserver.local", download_path, worker, NOW) == download
    for method, path, url in (("POST", PATH, upload), ("GET", download_path, download)):
        assert signer.verify(method, path, MultiDict(query_of(url)), NOW + 600)
        assert signer.verify(method, path, dict(query_of(url)), NOW + 600)
        assert not signer.verify(method, path, MultiDict(query_of(url)), NOW + 601)


@given(
    key=st.sampled_from([*PARAMS, EXPIRES, SIGNATURE]),
    value=st.text(max_size=12),
    first=st.booleans(),
)
def test_a_name_given_twice_never_verifies(key: str, value: str, first: bool) -> None:
    """Whatever the second value (the same one included) and wherever it stands."""
    signer = UrlSigner("key")
    pairs = query_of(signer.sign("POST", "http://127.0.0.1:8001", PATH, PARAMS, NOW))
    assert signer.verify("POST", PATH, MultiDict(pairs), NOW)
    repeated = [(key, value), *pairs] if first else [*pairs, (key, value)]
    assert not signer.verify("POST", PATH, MultiDict(repeated), NOW)


@given(signature=st.text(max_size=80), expires=st.text(max_size=30) | st.just("9" * 5000))
def test_values_no_signer_wrote_are_refused_without_an_exception(
    signature: str, expires: str
) -> None:
    """A signature with non-ASCII text, an expiry such as a superscript two (``isdigit`` but not
    ``int``) or 5 000 digits (beyond ``int``'s limit for text): False, not a server error."""
    signer = UrlSigner("key")
    params = {**PARAMS, EXPIRES: expires, SIGNATURE: signature}
    assert not signer.verify("POST", PATH, params, NOW)


def test_a_forged_expiry_that_looks_like_digits_is_refused() -> None:
    signer = UrlSigner("key")
    signed = dict(query_of(signer.sign("POST", "http://127.0.0.1:8001", PATH, PARAMS, NOW)))
    for expires in ("²", "9" * 5000, "٣" * 10, "+1900000000", " 1900000000"):
        assert not signer.verify("POST", PATH, {**signed, EXPIRES: expires}, NOW)
