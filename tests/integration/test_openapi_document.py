"""What the OpenAPI document tells a newcomer is true, in this process (Litestar's test client):
how to authenticate (each scheme, and each operation's, which the service then enforces), what
every parameter means with its unit and bounds, real examples that the service accepts and gives
back, the error shape it really answers (``{"detail": ...}``), and the ``Location`` of a queued
job. ``/docs`` shows that document from the service's own files, with no other origin."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tests.inprocess import API_KEY, BIG_WORKER, Api
from workerfacing_api.core.model import JobSpecs, Submission
from workerfacing_api.entrypoints.http.app import DOCS_ASSETS, DOCS_POLICY
from workerfacing_api.entrypoints.http.ui import COOKIE

Requirement = list[dict[str, list[str]]]
WORKER: Requirement = [{"bearerToken": []}]
WORKER_OR_LINK: Requirement = [{"bearerToken": []}, {}]
INTERNAL: Requirement = [{"internalKey": []}]
OPERATOR: Requirement = [{"internalKey": []}, {"bearerToken": []}]
DASHBOARD: Requirement = [{"internalKey": []}, {"bearerToken": []}, {"dashboardSession": []}]
# Who may call each operation (ARCHITECTURE §4); an operation missing here fails the test.
SECURITY: dict[str, Requirement | None] = {
    "welcome": None,
    "access_info": None,
    "health_live": None,
    "health_ready": None,
    "pull_jobs": WORKER,
    "get_job_status": WORKER,
    "put_job_status": WORKER,
    "get_upload_url": WORKER,
    "get_download_url": WORKER,
    "upload_file": WORKER_OR_LINK,
    "download_file": WORKER_OR_LINK,
    "submit_job": INTERNAL,
    "explain_job": INTERNAL,
    "metrics": OPERATOR,
    "demand": OPERATOR,
    "dashboard_overview": DASHBOARD,
    "dashboard_job": DASHBOARD,
    "dashboard_jobs": DASHBOARD,
    "dashboard_audit": DASHBOARD,
    "dashboard_retry": DASHBOARD,
    "dashboard_fail": DASHBOARD,
    "dashboard_release": DASHBOARD,
}


async def document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "/data/x" if m.group(1) == "file_id" else "1", path)


async def test_the_document_declares_how_to_authenticate_and_the_service_enforces_it(
    api: Api,
) -> None:
    doc = await document(api)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerToken"] | {"description": ""} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "",
    }
    assert (schemes["internalKey"]["type"], schemes["internalKey"]["in"]) == ("apiKey", "header")
    assert schemes["internalKey"]["name"] == "x-api-key"
    assert (schemes["dashboardSession"]["in"], schemes["dashboardSession"]["name"]) == (
        "cookie",
        COOKIE,
    )
    assert "security" not in doc  # no default: each operation says its own
    found = {op["operationId"]: op.get("security") for _, _, op in operations(doc)}
    assert found == SECURITY

    # Where a credential is required, a request without one is refused (401), as documented.
    for method, path, operation in operations(doc):
        if operation.get("security") and {} not in operation["security"]:
            answer = await api.client.request(method.upper(), concrete(path))
            assert answer.status_code == 401, (method, path, answer.text)
            assert "401" in operation["responses"], (method, path)


async def test_every_parameter_says_what_it_means_with_its_unit_and_bounds(api: Api) -> None:
    doc = await document(api)
    for method, path, operation in operations(doc):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description", "").strip(), (method, path, parameter["name"])
    pull = {p["name"]: p for p in doc["paths"]["/jobs"]["get"]["parameters"]}
    for name in ("memory", "gpu_mem", "gpu_memory"):
        assert "MiB" in pull[name]["description"], name
        assert pull[name]["schema"]["minimum"] == 0, name
    assert "seconds" in pull["older_than"]["description"]
    assert "1 or more" in pull["limit"]["description"]
    assert "at most 100" in pull["limit"]["description"]
    assert pull["limit"]["schema"]["minimum"] == 1


def examples_of(media: dict[str, Any]) -> list[Any]:
    return [example["value"] for example in media.get("examples", {}).values()]


async def test_the_examples_are_what_the_service_takes_and_gives(api: Api) -> None:
    doc = await document(api)
    submit = doc["paths"]["/_jobs"]["post"]
    (submission,) = examples_of(submit["requestBody"]["content"]["application/json"])
    Submission.from_json(msgspec.json.encode(submission))  # as strict as the service
    assert submission["job"]["handler"]["image_name"] == "decode"
    assert submission["job"]["handler"]["entrypoint"] == "train"
    assert examples_of(submit["responses"]["201"]["content"]["application/json"]) == [submission]

    # Submitted as it stands, the example is queued and echoed; a worker then pulls it exactly
    # as the pull's example shows it.
    answer = await api.client.post("/_jobs", json=submission, headers={"x-api-key": API_KEY})
    assert answer.status_code == 201, answer.text
    assert answer.json() == submission
    pulled = await api.pull()
    pull_examples = examples_of(
        doc["paths"]["/jobs"]["get"]["responses"]["200"]["content"]["application/json"]
    )
    assert {} in pull_examples
    (example,) = [e for e in pull_examples if e]
    assert list(pulled.values()) == list(example.values())
    for job in example.values():
        msgspec.convert(job, JobSpecs)

    # Every error answer of every operation shows an example of the service's own shape.
    for method, path, operation in operations(doc):
        for code, response in operation["responses"].items():
            if int(code) < 400 or "application/json" not in response.get("content", {}):
                continue
            shown = examples_of(response["content"]["application/json"])
            assert shown, (method, path, code)
            for value in shown:
                assert list(value) == ["detail"], (method, path, code)
                assert value["detail"], (method, path, code)


async def test_the_error_schema_is_the_one_the_service_answers(api: Api) -> None:
    doc = await document(api)
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["properties"] == {"detail": {"type": "string"}}
    assert problem["required"] == ["detail"]
    for method, path, operation in operations(doc):
        for code, response in operation["responses"].items():
            if int(code) >= 400 and "application/json" in response.get("content", {}):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, code)
    assert "status_code" not in msgspec.json.encode(doc).decode()

    # And the service answers that shape, here a 422 and a 401.
    bad = await api.client.get("/jobs", params={"memory": -1}, headers=api.auth())
    assert bad.status_code == 422
    assert list(bad.json()) == ["detail"]
    anonymous = await api.client.get("/jobs", params=BIG_WORKER)
    assert anonymous.status_code == 401
    assert list(anonymous.json()) == ["detail"]


async def test_a_queued_job_is_named_by_the_location_of_its_submission(api: Api) -> None:
    doc = await document(api)
    created = doc["paths"]["/_jobs"]["post"]["responses"]["201"]
    assert created["headers"]["location"]["required"] is True
    assert "/jobs/{queue id}/status" in created["headers"]["location"]["description"]

    body = api.job_body(41)
    answer = await api.client.post("/_jobs", json=body, headers={"x-api-key": API_KEY})
    assert answer.status_code == 201
    assert answer.json() == body  # the echo the user-facing API expects, unchanged
    location = answer.headers["location"]
    match = re.fullmatch(r"/jobs/(\d+)/status", location)
    assert match is not None, location
    status = await api.client.get(location, headers=api.auth())
    assert status.status_code == 200
    assert status.json() == "queued"
    assert list(await api.pull()) == [match.group(1)]  # the id a worker gets it by


async def test_docs_come_from_this_service_only(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == DOCS_POLICY
    assert "http" not in DOCS_POLICY  # no other origin
    assert "https://" not in page.text
    assert "http://" not in page.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(assets) == 4  # the script, the preset, the style sheet, the icon
    for asset in assets:
        assert asset.startswith(f"{DOCS_ASSETS}/"), asset
        served = await api.client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    # The page shows the document the service serves (its error shape, its security schemes).
    assert "bearerToken" in page.text
    assert "status_code" not in page.text
