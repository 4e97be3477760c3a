"""API keys on every route, TLS, and the audit log, on a real server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tests.support.servers import RunningServer, serve

from modelfleet.security.keys import KeyStore
from modelfleet.security.tls import generate_self_signed

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


@dataclass
class Keys:
    infer_iris: str
    infer_other: str
    read: str
    admin: str


@dataclass
class SecureServer:
    server: RunningServer
    keys: Keys
    audit_log: Path
    cert: Path


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[SecureServer]:
    folder = tmp_path_factory.mktemp("secure")
    store = KeyStore(folder / "keys.json")
    keys = Keys(
        infer_iris=store.create("client", ["infer:iris"], actor="test").key,
        infer_other=store.create("other", ["infer:other-*"], actor="test").key,
        read=store.create("dashboard", ["read"], actor="test").key,
        admin=store.create("ops", ["admin"], actor="test").key,
    )
    cert, key = folder / "cert.pem", folder / "key.pem"
    generate_self_signed(cert, key)
    audit_log = folder / "audit.jsonl"
    spec = {
        "server": {"tls_cert_file": str(cert), "tls_key_file": str(key), "max_body_bytes": 65536},
        "auth": {"enabled": True, "keys_file": str(folder / "keys.json"), "audit_log": str(audit_log)},
        "models": [{"path": str(iris_artifact)}],
    }
    spec_file = folder / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file), "--tls-cert", str(cert), "--tls-key", str(key)], folder) as server:
        yield SecureServer(server, keys, audit_log, cert)


def _client(secure: SecureServer) -> httpx.Client:
    return httpx.Client(base_url=secure.server.url.replace("http://", "https://"), verify=False, timeout=30)


PROTECTED = [
    ("GET", "/v2", "read"),
    ("GET", "/v2/models/iris", "read"),
    ("GET", "/v2/models/iris/ready", "read"),
    ("POST", "/v2/repository/index", "read"),
    ("GET", "/metrics", "read"),
    ("POST", "/v2/models/iris/infer", "infer"),
    ("POST", "/v2/repository/models/iris/load", "admin"),
]


@pytest.mark.parametrize(("method", "path", "needs"), PROTECTED)
def test_missing_and_wrong_keys_get_401(secure: SecureServer, method: str, path: str, needs: str) -> None:
    with _client(secure) as client:
        missing = client.request(method, path, json=BODY)
        wrong = client.request(method, path, json=BODY, headers={"Authorization": "Bearer mf_nope_notakey"})
        forged = secure.keys.admin[:-4] + "AAAA"
        forged_response = client.request(method, path, json=BODY, headers={"X-API-Key": forged})
    for response in (missing, wrong, forged_response):
        assert response.status_code == 401, (path, response.text)
        assert "error" in response.json()
        assert response.headers["www-authenticate"] == 'Bearer realm="modelfleet"'


@pytest.mark.parametrize(("method", "path", "needs"), PROTECTED)
def test_scopes_decide_403_or_success(secure: SecureServer, method: str, path: str, needs: str) -> None:
    allowed = {"read": secure.keys.read, "infer": secure.keys.infer_iris, "admin": secure.keys.admin}[needs]
    denied = secure.keys.infer_other if needs != "infer" else secure.keys.read
    with _client(secure) as client:
        ok = client.request(method, path, json=BODY, headers={"Authorization": f"Bearer {allowed}"})
        refused = client.request(method, path, json=BODY, headers={"Authorization": f"Bearer {denied}"})
        admin = client.request(method, path, json=BODY, headers={"X-API-Key": secure.keys.admin})
    assert ok.status_code == 200, (path, ok.text)
    assert admin.status_code == 200, "admin may do everything"
    assert refused.status_code == 403
    assert "iris" not in refused.text, "a refusal must not hint at which models exist"


def test_unknown_model_with_out_of_scope_key_is_403_not_404(secure: SecureServer) -> None:
    with _client(secure) as client:
        response = client.post(
            "/v2/models/secret-model/infer", json=BODY, headers={"X-API-Key": secure.keys.infer_iris}
        )
    assert response.status_code == 403


def test_health_routes_stay_open_for_probes(secure: SecureServer) -> None:
    with _client(secure) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200


def test_tritonclient_over_tls_with_a_key(secure: SecureServer) -> None:
    # The server's self-signed certificate is the only trusted CA: the client verifies it, host name included.
    client = triton.InferenceServerClient(
        secure.server.address, ssl=True, ssl_options={"ca_certs": str(secure.cert)}
    )
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    result = client.infer("iris", [tensor], headers={"Authorization": f"Bearer {secure.keys.infer_iris}"})
    assert result.as_numpy("label").tolist() == [0]


def test_plain_http_is_refused_on_a_tls_port(secure: SecureServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{secure.server.url}/v2/health/live", timeout=5)


def test_admin_unload_and_load_are_audited_and_keys_never_logged(secure: SecureServer) -> None:
    with _client(secure) as client:
        headers = {"Authorization": f"Bearer {secure.keys.admin}"}
        assert client.post("/v2/repository/models/iris/unload", headers=headers).status_code == 200
        assert client.post("/v2/models/iris/infer", json=BODY, headers=headers).status_code == 404
        assert client.post("/v2/repository/models/iris/load", headers=headers).status_code == 200
        assert client.post("/v2/models/iris/infer", json=BODY, headers=headers).status_code == 200
        client.get("/v2", headers={"Authorization": "Bearer mf_bad_key"})
    audit = secure.audit_log.read_text()
    assert '"repository.unload"' in audit and '"repository.load"' in audit
    assert "auth.denied" in audit
    everything_logged = audit + secure.server.log()
    for key in (secure.keys.admin, secure.keys.read, secure.keys.infer_iris, secure.keys.infer_other):
        # mf_<key id>_<secret>: the secret is URL-safe base64 and may hold "_" itself
        secret = key.split("_", 2)[2]
        assert len(secret) >= 40
        assert secret not in everything_logged


def test_request_limits_stay_enforced_with_auth_on(secure: SecureServer) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 4000
    big = {"inputs": [{"name": "input", "shape": [4000, 4], "datatype": "FP32", "data": rows}]}
    with _client(secure) as client:
        allowed = client.post(
            "/v2/models/iris/infer", json=big, headers={"X-API-Key": secure.keys.infer_iris}
        )
        anonymous = client.post("/v2/models/iris/infer", json=big)
    assert allowed.status_code == 413
    assert anonymous.status_code == 401, "credentials are checked before the body is read"


def test_audit_records_carry_the_client_address(secure: SecureServer) -> None:
    with _client(secure) as client:
        headers = {"Authorization": f"Bearer {secure.keys.admin}"}
        assert client.post("/v2/repository/models/iris/load", headers=headers).status_code == 200
        assert client.get("/v2", headers={"Authorization": "Bearer mf_nokey000_x"}).status_code == 401
    records = [json.loads(line) for line in secure.audit_log.read_text().splitlines()]
    recent = {r["event"]: r for r in records}
    for event in ("repository.load", "auth.denied"):
        assert re.fullmatch(r"127\.0\.0\.1:\d+", recent[event]["client"] or ""), recent[event]
    assert recent["repository.load"]["outcome"] == "ok" and recent["repository.load"]["key_id"]


def test_audit_to_stdout_as_on_kubernetes(tmp_path: Path, iris_artifact: Path) -> None:
    KeyStore(tmp_path / "keys.json").create("client", ["infer:iris"], actor="test")
    spec = {
        "auth": {"enabled": True, "keys_file": str(tmp_path / "keys.json")},
        "models": [{"path": str(iris_artifact)}],
    }
    spec_file = tmp_path / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], tmp_path, env={"MODELFLEET_AUDIT_LOG": "-"}) as server:
        assert httpx.get(f"{server.url}/v2", headers={"X-API-Key": "mf_nokey000_x"}).status_code == 401
        deadline = time.monotonic() + 10
        while "auth.denied" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in server.log().splitlines() if '"auth.denied"' in line]
    assert lines, server.log()
    record = json.loads(lines[0])
    assert record["client"].startswith("127.0.0.1:") and record["reason"] == "unknown"
