"""TLS helpers against a real HTTPS server on 127.0.0.1 with a self-signed pair made at test time."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.security.tls import client_ssl_context, generate_self_signed, server_ssl_context


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tls")
    generate_self_signed(base / "cert.pem", base / "key.pem")
    return base / "cert.pem", base / "key.pem"


@pytest.fixture(scope="module")
def https_port(pair: tuple[Path, Path]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = server_ssl_context(*pair).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_client_that_trusts_the_certificate_connects(https_port: int, pair: tuple[Path, Path]) -> None:
    context = client_ssl_context(pair[0])
    for host in ("127.0.0.1", "localhost"):
        response = httpx.get(f"https://{host}:{https_port}/", verify=context, timeout=10)
        assert response.status_code == 200 and response.text == "hello over tls"


def test_client_without_the_certificate_refuses_the_server(https_port: int) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{https_port}/", verify=client_ssl_context(), timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer(https_port: int) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{https_port}/", timeout=5)


def test_key_is_private_and_pairs_are_never_overwritten(pair: tuple[Path, Path]) -> None:
    assert pair[1].stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict):
        generate_self_signed(*pair)


def test_mismatched_or_missing_files_are_explained(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    generate_self_signed(tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(InvalidInput, match="do not load together"):
        server_ssl_context(pair[0], tmp_path / "other.key")
    with pytest.raises(NotFound, match="does not exist"):
        server_ssl_context(tmp_path / "missing.pem", pair[1])
    context = server_ssl_context(*pair)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
