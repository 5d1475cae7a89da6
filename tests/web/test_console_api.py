"""The web console's door over HTTP against a real node: the page and its assets, and the refusal matrix.

No session, a wrong password, a missing CSRF token, another site's Origin, a
role without the permission, a locked session, a token replayed after
logout, too many sign-ins from one address, an operation the console does
not offer: each refused, with its status and reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.auth import Role, Setting
from tests.harness.node_process import http_node
from tests.harness.sessions import PASSWORD, PIN, add_user, register_workstation

API = "/console/api"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[httpx.Client]:
    config = tmp_path / "http.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\nconsole_logins_max = 3\n')
    data = tmp_path / "data"
    with http_node(data, config) as (_proc, _mllp, port):
        add_user(data, "op.kim", Role.OPERATOR)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http


def _login(http: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    return http.post(f"{API}/login", json={"user": "op.kim", "password": password, "setting": "operator_console"})


def test_the_page_runs_only_its_own_assets_which_may_be_cached_by_their_hashed_names(served: httpx.Client) -> None:
    page = served.get("/console")
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    names = re.findall(r'/console/static/([\w.]+)"', page.text)
    assert sorted(n.split(".")[0] for n in names) == ["console", "console"]  # the script and the style
    for name in names:
        assert re.fullmatch(r"console\.[0-9a-f]{16}\.(js|css)", name)
        asset = served.get(f"/console/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.get("/console/static/console.js").status_code == 404  # only by its hashed name


def test_the_refusal_matrix(served: httpx.Client) -> None:
    http = served
    assert http.post(f"{API}/status", json={}).status_code == 403  # no session
    assert http.get(f"{API}/session").json()["state"] == "none"
    wrong = _login(http, "not the password")
    assert (wrong.status_code, "token" in wrong.json()) == (401, False)

    signed = _login(http)
    assert signed.status_code == 200
    assert "token" not in signed.json()  # the page never holds the session token
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console/api" in cookie
    csrf = {"X-Vigil-CSRF": signed.json()["csrf"]}
    assert http.post(f"{API}/status", json={}).status_code == 403  # no CSRF token
    assert http.post(f"{API}/status", json={}, headers={"X-Vigil-CSRF": "0" * 40}).status_code == 403
    foreign = http.post(f"{API}/status", json={}, headers={**csrf, "Origin": "https://evil.example"})
    assert (foreign.status_code, foreign.json()["error"]) == (403, "refused: the request came from another site")
    assert http.post(f"{API}/status", json={}, headers=csrf).status_code == 200
    # How old a count a screen takes is the console's to say, not the page's (the node refuses an hour).
    assert http.post(f"{API}/status", json={"max_age_s": 3600}, headers=csrf).status_code == 200

    role = http.post(f"{API}/patient", json={"key": "GENHOSP|MRN42"}, headers=csrf)
    assert role.status_code == 403
    assert "may not record.read" in role.json()["error"]
    assert http.post(f"{API}/user_add", json={}, headers=csrf).status_code == 404  # not the console's to offer

    assert http.post(f"{API}/lock", json={}, headers=csrf).status_code == 200
    locked = http.post(f"{API}/status", json={}, headers=csrf)
    assert locked.status_code == 403
    assert http.get(f"{API}/session").json()["state"] == "locked"
    assert http.post(f"{API}/unlock", json={"pin": PIN}, headers=csrf).status_code == 200
    assert http.post(f"{API}/status", json={}, headers=csrf).status_code == 200

    kept = dict(http.cookies)
    assert http.post(f"{API}/logout", json={}, headers=csrf).status_code == 200
    http.cookies.update(kept)  # the old token, replayed
    replayed = http.post(f"{API}/status", json={}, headers=csrf)
    assert replayed.status_code == 403

    assert _login(http).status_code == 200  # the third sign-in from this address this minute (a wrong one counts)
    too_many = _login(http)
    assert too_many.status_code == 429
    assert int(too_many.headers["retry-after"]) >= 1


def test_behind_a_proxy_that_ends_tls_the_cookies_are_secure_and_its_origin_is_this_site(served: httpx.Client) -> None:
    proxied = {"X-Forwarded-Proto": "https"}  # what nginx on the same host sends with TLS in front
    signed = served.post(
        f"{API}/login",
        json={"user": "op.kim", "password": PASSWORD, "setting": "operator_console"},
        headers=proxied,
    )
    assert signed.status_code == 200
    assert all("Secure" in c for c in signed.headers.get_list("set-cookie"))
    origin = {"Origin": f"https://{served.base_url.netloc.decode()}", "X-Vigil-CSRF": signed.json()["csrf"]}
    for cookie in signed.headers.get_list("set-cookie"):  # httpx keeps a Secure cookie off plain http: set by hand
        name, _, rest = cookie.partition("=")
        served.cookies.set(name, rest.partition(";")[0], path="/console/api")
    assert served.post(f"{API}/status", json={}, headers={**proxied, **origin}).status_code == 200


def test_the_setting_is_the_workstations_not_the_one_the_page_sends(served: httpx.Client, tmp_path: Path) -> None:
    """The sign-in page learns the device's setting before anyone signs in; a sign-in that asks for the office
    on an unregistered browser gets the emergency department's lock; once registered, the registration's."""
    first = served.get(f"{API}/session").json()
    station = first["workstation"]
    assert (station["registered"], station["setting"], station["idle_lock_s"]) == (False, "emergency_department", 300)
    device = station["device"]
    assert served.cookies.get("vigil_device") == device  # set on the first look, kept for the sign-in
    signed = served.post(f"{API}/login", json={"user": "op.kim", "password": PASSWORD, "setting": "office"})
    assert signed.status_code == 200
    assert signed.json()["setting"] == "emergency_department"
    register_workstation(tmp_path / "data", device, Setting.INTENSIVE_CARE, "ICU 2")
    again = served.post(f"{API}/login", json={"user": "op.kim", "password": PASSWORD})
    assert again.json()["setting"] == "intensive_care"
    assert served.get(f"{API}/session").json()["workstation"]["name"] == "ICU 2"
