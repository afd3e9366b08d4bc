"""Client certificates for the HTTP gateway, issued by the project's CA.

The project CA is secure mode's (``<data-dir>/kafka/secure/ca.pem`` and
``ca.key``, made by ``safer up --secure`` or ``safer secure``). An agency's
gateway certificate is an end-entity certificate with the clientAuth usage
and the common name ``gateway:<publisher id>``; its SHA-256 fingerprint is
registered in the credential store, so it can be listed and revoked like an
API token. The TLS handshake proves the chain to the CA; the gateway then
maps the fingerprint to the credential (unknown → 401, revoked → 403).

uvicorn does not hand the peer certificate to the application, so
``CertificateH11Protocol`` adds it to the ASGI scope as the ASGI TLS
extension does (``scope["extensions"]["tls"]["client_cert_chain"]``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from schemas import ConfigError, ReasonCode

__all__ = [
    "CertificateH11Protocol",
    "certificate_fingerprint",
    "client_certificate_der",
    "issue_client_certificate",
    "load_ca",
]

_CLIENT_DAYS = 397


def certificate_fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of a certificate's DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_ca(ca_file: str, ca_key_file: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        with open(ca_file, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
        with open(ca_key_file, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the project CA ({type(exc).__name__})",
            code=ReasonCode.CONFIG_INVALID,
            hint="run `safer up --secure` once to create it, or pass --ca-dir",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the project CA key is not an EC key", code=ReasonCode.CONFIG_INVALID)
    return key, cert


def issue_client_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    agency: str,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a clientAuth certificate ``CN=gateway:<agency>`` from the CA."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gateway:{agency}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=_CLIENT_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def client_certificate_der(scope: Any) -> bytes | None:
    """The verified client certificate (DER) of a request, if it presented one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_der_chain") or []
    return bytes(chain[0]) if chain else None


async def _with_certificate(
    app: Any, der: bytes | None, scope: Any, receive: Any, send: Any
) -> Any:
    if der is not None and scope.get("type") == "http":
        pem = ssl.DER_cert_to_PEM_cert(der)
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {"client_cert_chain": [pem], "client_cert_der_chain": [der]}
        scope = {**scope, "extensions": extensions}
    return await app(scope, receive, send)


class CertificateH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, passing the verified peer certificate to the app."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.app = functools.partial(_with_certificate, self.config.loaded_app, der)
