"""Who may call what, in-process on the real tiny bundle: the admin role and its request rules,
the Host check against DNS rebinding, the brake on wrong keys, and the cheap body limits on
every POST route (issue 18, items 5, 9 and 10)."""

from __future__ import annotations

import os
import re

import pytest

from edge_app import create_app

KEY = "api-key-for-tests-0123456789"
ADMIN = "admin-key-for-tests-0123456789"
POSTS = ("/v1/images/generations", "/v1/completions", "/admin/reload")


def _app(bundle, **config):
    return create_app({"bundles": [str(bundle)], "power_sensor": "none", **config})


def _reloads(client, headers=None) -> dict[str, float]:
    text = client.get("/metrics", headers=headers or {}).get_data(as_text=True)
    return {m[0]: float(m[1]) for m in
            re.findall(r'edgegen_reloads_total\{result="(\w+)"\} ([\d.]+)', text)}


def test_admin_keys_and_api_keys_open_only_their_own_routes(dcgan_bundle):
    client = _app(dcgan_bundle, api_keys=[KEY], admin_keys=[ADMIN]).test_client()
    api, admin = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}"}
    r = client.post("/admin/reload", json={}, headers=api)
    assert r.status_code == 401 and "admin key" in r.get_json()["error"]["message"]
    assert client.post("/admin/reload", json={}, headers=admin).status_code == 200
    assert client.get("/v1/models", headers=admin).status_code == 401
    assert client.get("/v1/models", headers=api).status_code == 200
    doc = client.get("/openapi.json").get_json()
    assert "401" in doc["paths"]["/admin/reload"]["post"]["responses"]


def test_without_an_admin_key_admin_answers_loopback_only(dcgan_bundle):
    client = _app(dcgan_bundle).test_client()
    remote = client.post("/admin/reload", json={}, environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert remote.status_code == 403 and "admin_keys" in remote.get_json()["error"]["message"]
    for loopback in ("127.0.0.1", "127.0.0.2", "::1"):
        r = client.post("/admin/reload", json={}, environ_base={"REMOTE_ADDR": loopback})
        assert r.status_code == 200, loopback
    # generation stays open to all (no API key configured)
    r = client.post("/v1/images/generations", json={"seed": 1},
                    environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert r.status_code == 200


def test_admin_takes_json_only_so_a_cross_site_form_cannot_reload(dcgan_bundle):
    client = _app(dcgan_bundle).test_client()
    before = _reloads(client)
    for kind, data in (("text/plain", "{}"), ("application/x-www-form-urlencoded", "bundles=x"),
                       ("multipart/form-data; boundary=b", "--b--"), (None, "")):
        r = client.post("/admin/reload", data=data, content_type=kind)
        assert r.status_code == 415, kind
        assert r.get_json()["error"]["code"] == "unsupported_media_type"
    assert _reloads(client) == before  # nothing was reloaded
    assert client.post("/admin/reload", json={}).status_code == 200


def test_bundle_lists_are_confined_to_bundle_root(dcgan_bundle, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "tiny").symlink_to(dcgan_bundle)  # a link inside leading out
    client = _app(dcgan_bundle).test_client()
    r = client.post("/admin/reload", json={"bundles": [str(dcgan_bundle)]})
    assert r.status_code == 400 and "set bundle_root" in r.get_json()["error"]["message"]

    client = _app(dcgan_bundle, bundle_root=str(root)).test_client()
    before = _reloads(client)
    messages = set()
    for entry in ("/etc", "/nonexistent/dir", "../../etc", "tiny", "ok\x00/x"):
        r = client.post("/admin/reload", json={"bundles": [entry]})
        assert r.status_code == 400, entry
        messages.add(r.get_json()["error"]["message"].replace(repr(entry), "<entry>"))
    assert messages == {"bundle <entry> is not inside bundle_root"}  # it probes nothing
    assert _reloads(client) == before
    r = client.post("/admin/reload", json={"bundles": ["absent"]})  # inside: a failed reload
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_bundle"
    assert _reloads(client)["failure"] == before["failure"] + 1


@pytest.mark.parametrize("host, allowed, ok", [
    ("127.0.0.1:8080", (), True), ("localhost:8080", (), True), ("[::1]:8080", (), True),
    ("10.1.2.3", (), True), ("app.localhost", (), True), (os.uname().nodename, (), True),
    ("evil.example", (), False), ("evil.example:8080", (), False),
    ("127.0.0.1.evil.example", (), False),
    ("pi-01.lan", ("pi-01.lan",), True), ("PI-01.LAN.", ("pi-01.lan",), True),
    ("cam.fleet.lan", ("*.fleet.lan",), True), ("fleet.lan.evil", ("*.fleet.lan",), False),
    ("anything.example", ("*",), True),
])
def test_host_names_outside_the_allowed_set_are_refused(dcgan_bundle, host, allowed, ok):
    client = _app(dcgan_bundle, allowed_hosts=list(allowed)).test_client()
    for method, path in (("get", "/v1/models"), ("post", "/admin/reload")):
        r = getattr(client, method)(path, headers={"Host": host},
                                    **({"json": {}} if method == "post" else {}))
        assert (r.status_code != 403) is ok, (host, path, r.get_json())
        if not ok:
            assert "allowed_hosts" in r.get_json()["error"]["message"]


def test_wrong_keys_are_counted_and_braked_per_address(dcgan_bundle):
    client = _app(dcgan_bundle, api_keys=[KEY], auth_failures_per_minute=3).test_client()
    wrong = {"Authorization": "Bearer wrong-key-0123456789abcdef"}
    attacker = {"REMOTE_ADDR": "192.168.1.66"}
    for _ in range(5):  # a missing key guesses nothing: not counted
        assert client.get("/v1/models", environ_base=attacker).status_code == 401
    for _ in range(3):
        assert client.get("/v1/models", headers=wrong, environ_base=attacker).status_code == 401
    braked = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                        environ_base=attacker)  # even the right key waits: no oracle
    assert braked.status_code == 429 and 1 <= int(braked.headers["Retry-After"]) <= 60
    assert braked.get_json()["error"]["code"] == "too_many_failed_keys"
    other = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                       environ_base={"REMOTE_ADDR": "192.168.1.67"})
    assert other.status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert 'edgegen_requests_rejected_total{reason="auth_throttled"} 1.0' in text
    assert 'edgegen_requests_rejected_total{reason="unauthorized"} 8.0' in text


@pytest.mark.parametrize("route", POSTS)
def test_deep_nesting_and_lone_surrogates_are_400_json_on_every_post_route(dcgan_bundle, route):
    client = _app(dcgan_bundle).test_client()
    deep = b"[" * 100_000 + b"]" * 100_000
    for body, fragment in ((deep, "nests deeper than 32 levels"),
                           (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper"),
                           (b'{"prompt": "\\ud800 lone"}', "lone UTF-16 surrogate"),
                           (b'{"bundles": ["\\udfff"]}', "lone UTF-16 surrogate"),
                           (b'{"\\ud800": 1}', "lone UTF-16 surrogate")):
        r = client.post(route, data=body, content_type="application/json")
        assert r.status_code == 400, (route, body[:30], r.get_data()[:200])
        assert r.is_json and fragment in r.get_json()["error"]["message"]


def test_a_missing_companion_asset_does_not_reveal_the_install_path(dcgan_bundle, tmp_path):
    hidden = tmp_path / "opt-secret-install" / "ort"
    client = _app(dcgan_bundle, companion_ort_dir=str(hidden)).test_client()
    r = client.get("/companion/ort.wasm.min.mjs")
    assert r.status_code == 404 and "fetch-web-deps.sh" in r.get_json()["error"]["message"]
    assert "opt-secret-install" not in r.get_data(as_text=True)
