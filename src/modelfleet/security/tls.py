"""TLS for the server and router: SSL contexts from PEM files, and self-signed pairs for tests and dev."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelfleet.errors import Conflict, InvalidInput, NotFound


def _need(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise NotFound(f"TLS {what} file {path} does not exist")
    return Path(path)


def server_ssl_context(
    cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with ``client_ca_file`` clients must present a certificate it signed (mTLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(_need(cert_file, "certificate"), _need(key_file, "key"))
    except ssl.SSLError as exc:
        raise InvalidInput(
            f"TLS certificate {cert_file} and key {key_file} do not load together ({exc.reason or exc}); "
            "check both are PEM and belong to each other"
        ) from None
    if client_ca_file is not None:
        context.load_verify_locations(_need(client_ca_file, "client CA"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context (the router talking to servers, tests talking to a self-signed server)."""
    context = ssl.create_default_context(cafile=None if ca_file is None else str(_need(ca_file, "CA")))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def generate_self_signed(
    cert_file: Path,
    key_file: Path,
    *,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    valid_days: int = 30,
    overwrite: bool = False,
) -> None:
    """Write a self-signed certificate (ECDSA P-256) valid for ``hostnames`` and ``ip_addresses``.

    For tests and local development only: clients must be told to trust this exact certificate.
    """
    cert_file, key_file = Path(cert_file), Path(key_file)
    if not overwrite:
        for path in (cert_file, key_file):
            if path.exists():
                raise Conflict(f"{path} already exists; refusing to overwrite it")
    if valid_days < 1:
        raise InvalidInput("valid_days must be at least 1")
    try:
        addresses = [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "modelfleet")]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(h) for h in hostnames), *addresses]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for path in (cert_file, key_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
