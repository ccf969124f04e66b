"""The gateway's API document (services/gateway/openapi.py) and /docs, on an app built in-process: nothing
connects, so what needs no server is asked of the app itself through httpx's ASGI transport."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator

from infra.objectstore import MemoryObjectStore
from services.billing.ledger import open_ledger
from services.config import Settings
from services.gateway.app import build_app
from services.gateway.openapi import BEARER, LINK, SESSION, operations
from services.gateway.routers.pages import SWAGGER_UI_FILES

PUBLIC = {("get", "/healthz"), ("get", "/asyncapi.json"), ("get", "/v1/quote"), ("delete", "/v1/session")}
"""Operations anyone may call."""


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    # Addresses nothing listens on: building the app connects to nothing, and these tests never start it.
    settings = Settings(nats_url="nats://127.0.0.1:9", s3_endpoint="http://127.0.0.1:9", state_dir=tmp_path)
    return build_app(settings, ledger=open_ledger(str(tmp_path / "ledger.sqlite3")), store=MemoryObjectStore())


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        yield http


def test_the_api_key_is_a_bearer_scheme_and_the_session_cookie_is_documented(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes[BEARER] == {**schemes[BEARER], "type": "http", "scheme": "bearer"}
    assert schemes[SESSION] == {**schemes[SESSION], "type": "apiKey", "in": "cookie", "name": "i2v_session"}


def test_every_operation_but_the_public_ones_takes_the_api_key(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document):
        requirement = operation.get("security", [])
        if (method, path) in PUBLIC:
            assert requirement == [], (method, path)
            assert "401" not in operation["responses"], (method, path)
        else:
            assert {BEARER: []} in requirement, (method, path)
            assert "401" in operation["responses"], (method, path)
    assert document["paths"]["/v1/session"]["post"]["security"] == [{BEARER: []}], "logging in takes the key only"
    # A link token opens GET and HEAD of what it was made for, a job's token all under the job; never a change.
    for method, path in [("get", "/v1/account"), ("head", "/v1/jobs/{job_id}/video"), ("get", "/v1/jobs/{job_id}")]:
        assert {LINK: []} in document["paths"][path][method]["security"], (method, path)
    for method, path in [("post", "/v1/jobs"), ("post", "/v1/jobs/{job_id}/cancel"), ("post", "/v1/tokens")]:
        assert {LINK: []} not in document["paths"][path][method]["security"], (method, path)


async def test_what_the_document_secures_is_what_the_gateway_refuses_without_credentials(
    document: dict[str, Any], client: httpx.AsyncClient
) -> None:
    for (method, path), operation in operations(document):
        if (method, path) == ("get", "/asyncapi.json"):
            continue  # builds every service's app: public, and too slow to ask here for nothing
        url = path.replace("{job_id}", "j0192a6f0c2e1a8b3c4")
        answer = await client.request(method.upper(), url, json={} if "requestBody" in operation else None)
        assert (answer.status_code == 401) == bool(operation.get("security")), (method, path, answer.text)


HOW = "give the route's models json_schema_extra={'examples': [...]}, or add one in services/gateway/openapi.py"


def test_every_operation_shows_an_example_of_its_success(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, (method, path)
        shown = False
        for status, response in successes.items():
            for kind, media in response.get("content", {}).items():
                if kind.startswith(("application/json", "text/")):
                    assert media.get("examples"), (method, path, status, kind, HOW)
                shown = shown or bool(media.get("examples"))
            shown = shown or any("example" in h for h in response.get("headers", {}).values())
        assert shown or set(successes) == {"204"}, (method, path, HOW)  # No Content has nothing to show
        if "requestBody" in operation:
            assert any(m.get("examples") for m in operation["requestBody"]["content"].values()), (method, path, HOW)


def test_every_error_answer_shows_an_example(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45" and "application/json" in response.get("content", {}):
                assert response["content"]["application/json"].get("examples"), (method, path, status)


def test_every_example_fits_its_schema(document: dict[str, Any]) -> None:
    checked = 0
    for (method, path), operation in operations(document):
        bodies = [("request", operation.get("requestBody", {})), *operation["responses"].items()]
        for status, body in bodies:
            for kind, media in body.get("content", {}).items():
                if "schema" not in media or not kind.endswith("json"):
                    continue
                validator = Draft202012Validator({**media["schema"], "components": document["components"]})
                for name, example in media.get("examples", {}).items():
                    errors = [e.message for e in validator.iter_errors(example["value"])]
                    assert errors == [], (method, path, status, name, errors)
                    checked += 1
    assert checked > 40


def test_statuses_follow_the_code_that_answers_them(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def statuses(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # No parameter, no body, no change: only the caller can be refused.
    assert statuses("get", "/v1/account") == {"200", "401"}
    # The session cookie's same-site check guards changes only.
    assert "403" not in statuses("get", "/v1/jobs/{job_id}") and "403" in statuses("post", "/v1/jobs/{job_id}/cancel")
    # Nothing in the path names a job.
    assert "404" not in statuses("post", "/v1/jobs") | statuses("get", "/v1/jobs")
    # Undeclared by the routes, returned by them: the end of the stream, a part of a file.
    assert "204" in statuses("get", "/v1/jobs/{job_id}/events")
    assert "206" in statuses("get", "/v1/jobs/{job_id}/video") and "206" not in statuses(
        "head", "/v1/jobs/{job_id}/video"
    )
    assert "416" not in statuses("head", "/v1/jobs/{job_id}/poster")
    submit = statuses("post", "/v1/jobs")
    assert {"200", "202", "400", "401", "402", "403", "409", "413", "415", "422", "429", "503"} == submit
    video = paths["/v1/jobs/{job_id}/video"]["get"]["responses"]["200"]["content"]
    assert {"video/mp4", "video/webm", "image/gif", "image/webp"} == set(video)


async def test_docs_is_swagger_ui_from_the_gateway_itself(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "<script>" not in page.text and "<style" not in page.text and "//" not in page.text  # nothing from elsewhere
    for name in SWAGGER_UI_FILES:
        assert f'"/docs/{name}"' in page.text
        served = await client.get(f"/docs/{name}")
        assert served.status_code == 200 and len(served.content) > 500, name
    assert (await client.get("/docs/swagger-ui-bundle.js")).headers["content-type"].startswith("text/javascript")
    # Only the files the page loads: not the package's others, not a way out of its folder.
    for other in ("swagger-editor-bundle.js", "swagger-initializer.js", "..%2F__init__.py", "LICENSE"):
        assert (await client.get(f"/docs/{other}")).status_code == 404, other
