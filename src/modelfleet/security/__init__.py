"""Endpoint security: scoped API keys (hashed at rest), request authorisation, audit log, TLS helpers.

Server use::

    from modelfleet.security import Authenticator
    auth = Authenticator.from_keys_file(Path("keys.json"), audit_log=Path("audit.jsonl"))
    principal = auth.authorize(request.headers.get("authorization"), f"infer:{model_name}")
"""

from modelfleet.security.audit import AuditLog
from modelfleet.security.auth import (
    WWW_AUTHENTICATE,
    Authenticator,
    Authorizer,
    AuthStats,
    Principal,
    authorize_off_loop,
    credentials_from_headers,
)
from modelfleet.security.keys import ApiKeyRecord, CreatedKey, KeyStore
from modelfleet.security.scopes import Scope, parse_scopes, required_scope
from modelfleet.security.tls import client_ssl_context, generate_self_signed, server_ssl_context

__all__ = [
    "WWW_AUTHENTICATE",
    "ApiKeyRecord",
    "AuditLog",
    "AuthStats",
    "Authenticator",
    "Authorizer",
    "CreatedKey",
    "KeyStore",
    "Principal",
    "Scope",
    "authorize_off_loop",
    "client_ssl_context",
    "credentials_from_headers",
    "generate_self_signed",
    "parse_scopes",
    "required_scope",
    "server_ssl_context",
]
