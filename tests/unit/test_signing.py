"""Signed links to this service's own endpoints (ARCHITECTURE §4): valid as handed out, until they
expire, for exactly the request they name; no chosen value can stand in for another parameter."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from workerfacing_api.adapters.signing import EXPIRES, SIGNATURE, UrlSigner

NOW = 1_800_000_000.0
PATH = "/jobs/7/files/upload"


def signed_params(signer: UrlSigner, params: dict[str, str]) -> dict[str, str]:
    url = signer.sign("POST", "http://127.0.0.1:8001", PATH, params, NOW)
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def test_a_link_holds_as_handed_out_until_it_expires() -> None:
    signer = UrlSigner("key", lifetime=600)
    params = signed_params(signer, {"type": "log", "base_path": "run/1", "worker": "w1"})
    assert signer.verify("POST", PATH, params, NOW + 599)
    assert not signer.verify("POST", PATH, params, NOW + 601)
    assert not signer.verify("GET", PATH, params, NOW)
    assert not signer.verify("POST", "/jobs/8/files/upload", params, NOW)
    assert not UrlSigner("other key").verify("POST", PATH, params, NOW)


def test_a_newline_in_a_chosen_value_cannot_forge_another_parameter() -> None:
    """A black-box probe's finding (docs/RELIABILITY.md): a worker asks for a link whose base_path
    carries line breaks, an expiry of its own and the start of an extra parameter, then splits that
    text into parameters of its own. With the signed text made of ``name=value`` lines, the old
    signature covered the forged link too, and it lived for decades."""
    signer = UrlSigner("key", lifetime=600)
    forged_expiry = "4102444800"  # 2100-01-01
    params = signed_params(
        signer,
        {"type": "output", "base_path": f"a\n{EXPIRES}={forged_expiry}\nf=", "worker": "w1"},
    )
    assert signer.verify("POST", PATH, params, NOW)  # the link as handed out works
    forged = {
        **params,
        "base_path": "a",
        EXPIRES: forged_expiry,
        "f": f"\n{EXPIRES}={params[EXPIRES]}",
    }
    assert not signer.verify("POST", PATH, forged, NOW)
    assert not signer.verify("POST", PATH, forged, NOW + 10 * 365 * 24 * 3600)


texts = st.text(min_size=0, max_size=12)


@given(
    params=st.dictionaries(
        st.sampled_from(["type", "base_path", "worker", "attempt"]), texts, min_size=1
    ),
    key=st.sampled_from(["type", "base_path", "worker", "attempt"]),
    value=texts,
)
def test_changing_any_parameter_breaks_the_signature(
    params: dict[str, str], key: str, value: str
) -> None:
    signer = UrlSigner("key")
    signed = signed_params(signer, params)
    assert signer.verify("POST", PATH, signed, NOW)
    changed = {**signed, key: value}
    if changed != signed:
        assert not signer.verify("POST", PATH, changed, NOW)
    without = {k: v for k, v in signed.items() if k not in (key, SIGNATURE)}
    without[SIGNATURE] = signed[SIGNATURE]
    if key in params:
        assert not signer.verify("POST", PATH, without, NOW)
