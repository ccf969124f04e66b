"""Who may do what with which credential: API keys, the session cookie, link tokens, key rotation, and the
browser protections (same-origin changes, security headers), against a real gateway."""

import httpx

from services.gateway.auth import hash_api_key, new_api_key
from services.gateway.dependencies import SESSION_COOKIE
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import complete, picture, submit, wait_status


async def log_in(gateway: RunningGateway, key: str) -> str:
    """The session cookie's value for ``key``."""
    async with gateway.client() as browser:
        login = await browser.post("/v1/session", headers={"Authorization": f"Bearer {key}"})
        assert login.status_code == 200, login.text
        assert "httponly" in login.headers["set-cookie"].lower()
        return login.cookies[SESSION_COOKIE]


def page_client(gateway: RunningGateway, cookie: str, origin: str | None = None) -> httpx.AsyncClient:
    """A browser on the gateway's page: the session cookie, and what a browser says of a same-origin fetch."""
    client = gateway.client()
    client.cookies.set(SESSION_COOKIE, cookie)
    client.headers["Origin"] = origin or gateway.url
    return client


async def link_token(client: httpx.AsyncClient, resource: str) -> str:
    response = await client.post("/v1/tokens", json={"resource": resource})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def test_a_link_token_reads_its_own_job_and_nothing_else(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as owner:
        job = (await submit(owner)).json()
        other_job = (await submit(owner)).json()
        await complete(gateway, job, name, b"video bytes")
        await wait_status(owner, job["id"], "succeeded")
        token = await link_token(owner, job["links"]["self"])
        video_only = await link_token(owner, job["links"]["video"])
        assert key not in token
    async with gateway.client() as anonymous:

        async def status(method: str, path: str, token: str, **kwargs: object) -> int:
            response = await anonymous.request(method, path, params={"token": token}, **kwargs)  # type: ignore[arg-type]
            return response.status_code

        for path in (job["links"]["self"], job["links"]["video"], job["links"]["poster"], job["links"]["events"]):
            assert await status("GET", path, token) in {200, 204}, path
        assert await status("HEAD", job["links"]["video"], token) == 200
        assert await status("GET", job["links"]["video"], video_only) == 200
        # Not another job, not the account, not the list, not the job itself for a video-only token.
        for path in (other_job["links"]["self"], "/v1/account", "/v1/jobs", f"{job['links']['self']}x"):
            assert await status("GET", path, token) == 401, path
        assert await status("GET", job["links"]["self"], video_only) == 401
        # Never a change: no submit, no cancel or delete, no fresh token (a chain of tokens).
        files = {"image": ("pic.png", picture(), "image/png")}
        assert await status("POST", "/v1/jobs", token, files=files) == 401
        assert await status("POST", job["links"]["cancel"], token) == 401
        assert await status("DELETE", job["links"]["self"], token) == 401
        assert await status("POST", "/v1/tokens", token, json={"resource": job["links"]["self"]}) == 401
        # Only as ?token=: not as a bearer credential, not as the cookie.
        as_bearer = await anonymous.get(job["links"]["self"], headers={"Authorization": f"Bearer {token}"})
        assert as_bearer.status_code == 401
        anonymous.cookies.set(SESSION_COOKIE, token)
        assert (await anonymous.get(job["links"]["self"])).status_code == 401


async def test_a_token_is_made_only_for_the_callers_own_job_or_an_api_resource(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    _, other_key = gateway.account(1000)
    async with gateway.client(key) as owner, gateway.client(other_key) as other:
        job = (await submit(owner)).json()
        stolen = await other.post("/v1/tokens", json={"resource": job["links"]["video"]})
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "job_not_found"
        account_token = await link_token(other, "/v1/account")
        for bad in ("/v1/session", "/v1/jobs/../account", "https://evil.example/", "/v1/jobs/x/cancel", ""):
            refused = await owner.post("/v1/tokens", json={"resource": bad})
            assert (refused.status_code, refused.json()["error"]["field"]) == (422, "resource"), bad
        assert (await owner.post("/v1/tokens")).status_code == 422
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/v1/account", params={"token": account_token})).status_code == 200


async def test_the_session_cookie_works_only_as_the_cookie(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    cookie = await log_in(gateway, key)
    async with page_client(gateway, cookie) as browser:
        assert (await browser.get("/v1/account")).json()["name"] == name
        assert (await browser.post("/v1/tokens", json={"resource": "/v1/account"})).status_code == 200
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/v1/account", params={"token": cookie})).status_code == 401
        as_bearer = await anonymous.get("/v1/account", headers={"Authorization": f"Bearer {cookie}"})
        assert as_bearer.status_code == 401
    refused = await gateway.client().__aenter__()
    try:
        response = await refused.post("/v1/session", headers={"Authorization": f"Bearer {cookie}"})
        assert response.status_code == 401  # a session does not make another session
    finally:
        await refused.aclose()


async def test_a_new_key_voids_the_old_key_sessions_and_tokens_at_once(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    cookie = await log_in(gateway, key)
    async with gateway.client(key) as client, page_client(gateway, cookie) as browser:
        job = (await submit(client)).json()
        token = await link_token(client, job["links"]["self"])
        cookie_token = await link_token(browser, job["links"]["self"])
        assert (await client.get("/v1/account")).status_code == 200  # the old key was just used
        new_key = new_api_key()
        gateway.ledger.set_api_key_hash(name, hash_api_key(new_key))  # `i2v accounts key NAME`

        old_key = await client.get("/v1/account")
        assert old_key.status_code == 401, "a key cache kept the old key working"
        assert (await browser.get("/v1/account")).status_code == 401
        for old in (token, cookie_token):
            assert (await browser.get(job["links"]["self"], params={"token": old})).status_code == 401
    async with gateway.client(new_key) as fresh:
        assert (await fresh.get("/v1/account")).json()["name"] == name
        assert (await fresh.get(job["links"]["self"])).status_code == 200
        new_cookie = await log_in(gateway, new_key)
    async with page_client(gateway, new_cookie) as browser:
        assert (await browser.get("/v1/account")).status_code == 200


async def test_a_change_with_the_cookie_must_come_from_this_sites_page(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    cookie = await log_in(gateway, key)
    files = {"image": ("pic.png", picture(), "image/png")}
    data = {"duration": "2", "fps": "8", "steps": "2"}
    cross_site: list[dict[str, str]] = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port of the same host: SameSite=Strict lets it through
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
        {},  # a browser always says where a POST comes from; a client that does not sends its key
    ]
    async with gateway.client() as browser:
        browser.cookies.set(SESSION_COOKIE, cookie)
        for headers in cross_site:
            response = await browser.post("/v1/jobs", files=files, data=data, headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["error"]["code"] == "cross_site_request"
            assert (await browser.delete("/v1/session", headers=headers)).status_code == 403
        assert (await browser.get("/v1/jobs")).json()["items"] == []  # nothing was submitted
        # Reading stays open to the cookie from anywhere; the page's own changes go through.
        assert (await browser.get("/v1/account", headers={"Origin": "http://evil.example"})).status_code == 200
        same = await browser.post("/v1/jobs", files=files, data=data, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 202, same.text
        by_origin = await browser.post(f"/v1/jobs/{same.json()['id']}/cancel", headers={"Origin": gateway.url})
        assert by_origin.status_code == 202, by_origin.text
    # An API key is not sent by a browser on its own: another site cannot use it, so no origin check.
    async with gateway.client(key) as client:
        response = await client.post("/v1/jobs", files=files, data=data, headers={"Origin": "http://evil.example"})
        assert response.status_code == 202, response.text


async def test_page_and_api_answers_carry_the_security_headers(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        for path in ("/", "/docs", "/static/app.js", "/openapi.json", "/v1/account", "/v1/jobs/jnosuch", "/nowhere"):
            response = await client.get(path)
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            policy = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, path
            assert "unsafe-inline" not in policy
        async with gateway.client() as anonymous:
            assert (await anonymous.get("/v1/account")).headers["x-frame-options"] == "DENY"
        # The page's own markup has no inline script or style for the policy to block.
        for page in ("/", "/docs"):
            html = (await client.get(page)).text
            assert "<script>" not in html and "<style" not in html and "style=" not in html, page
