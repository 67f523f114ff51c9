"""Mutual-TLS credentials for gRPC servers and channels, and the peer identity of a call.

Servers always require a client certificate (``require_client_auth``): a peer without one,
or with one from another root, fails the handshake, which its client sees as UNAVAILABLE,
and no handler runs. With ``reload=True`` the server re-reads its key, chain and trusted
roots whenever one of those files changes (through ``dynamic_ssl_server_credentials``,
asked on every new handshake), so certificates rotate without a restart; connections open
before the rotation keep their old session.

What a servicer learns about the peer: ``context.auth_context()`` holds, for a TLS peer,
``x509_pem_cert`` (the leaf, PEM), ``x509_pem_cert_chain`` (the rest of the chain the peer
sent, the intermediate for our clients, PEM, without the leaf), ``x509_subject_alternative_name``
and ``peer_dns`` (the SAN DNS names), ``x509_common_name``, ``x509_subject``,
``transport_security_type`` (``ssl``) and ``security_level``. :func:`peer_identity` verifies
leaf plus sent chain against the trusted root with :func:`fedmatch.pki.verify.verify_peer`,
which adds what TLS does not check (our CRLs, the scope of the issuing CA) and parses the
identity. The server therefore needs no copy of the intermediates: every client sends its own
(``cert.pem`` is leaf then intermediate), and TLS already refused any client that did not.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.fileio import read_file
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.names import Identity, parse_dns
from fedmatch.pki.verify import verify_peer

__all__ = ["channel_credentials", "channel_options", "peer_identity", "server_credentials"]

log = logging.getLogger("fedmatch.pki")

# Properties of gRPC's auth context for a TLS peer (grpc/grpc_security_constants.h).
_PEER_CERT = "x509_pem_cert"
_PEER_CHAIN = "x509_pem_cert_chain"


def _material(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(key, chain, root) PEM bytes, checked to belong together; raises ConfigError."""
    key_pem = read_file(files.key, private=True)
    chain_pem = read_file(files.chain)
    root_pem = read_file(files.root)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key_pem
    if encrypted and files.key_passphrase is None:
        raise ConfigError(
            f"{files.key} is encrypted: give its passphrase in [tls] key_passphrase_env or "
            "key_passphrase_file"
        )
    try:
        key = serialization.load_pem_private_key(
            key_pem, password=files.key_passphrase if encrypted else None
        )
    except (ValueError, TypeError):
        if encrypted:
            raise ConfigError(f"the tls key passphrase does not decrypt {files.key}") from None
        raise ConfigError(f"{files.key} does not hold a PEM key") from None
    if encrypted:
        # gRPC takes the key in clear: it is decrypted here, in memory, never written.
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        x509.load_pem_x509_certificates(root_pem)
    except ValueError:
        raise ConfigError(f"{files.chain} or {files.root} is not a PEM certificate") from None
    # A key that is not the leaf's would fail every handshake; during a rotation it means
    # the files are half replaced.
    if chain[0].public_key() != key.public_key():
        raise ConfigError(f"{files.key} is not the key of the first certificate in {files.chain}")
    return key_pem, chain_pem, root_pem


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in (files.key, files.chain, files.root):
        st = os.stat(path)
        stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class _Reloader:
    """The certificate fetcher of a dynamic server credential: returns a new configuration
    when the files changed and are consistent, else None (gRPC keeps the current one)."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = _stamp(files)
        self._refused: tuple[tuple[int, int, int], ...] | None = None
        key, chain, root = _material(files)
        self.initial = grpc.ssl_server_certificate_configuration([(key, chain)], root)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs inside gRPC's handshake: it must never raise, and it is called concurrently.
        with self._lock:
            try:
                stamp = _stamp(self._files)
            except OSError:
                return None
            if stamp == self._stamp or stamp == self._refused:
                return None
            try:
                key, chain, root = _material(self._files)
            except ConfigError as exc:
                # Logged once per state of the files; retried when they change again.
                self._refused = stamp
                log.warning("TLS files not reloaded, keeping the current ones: %s", exc)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded from %s", self._files.chain)
            return grpc.ssl_server_certificate_configuration([(key, chain)], root)


def server_credentials(files: TlsFiles, reload: bool = True) -> grpc.ServerCredentials:
    """mTLS server credentials: present ``files.chain``, require a client certificate
    chaining to ``files.root``. With ``reload`` the files are re-read when they change."""
    if not reload:
        key, chain, root = _material(files)
        return grpc.ssl_server_credentials([(key, chain)], root, require_client_auth=True)
    reloader = _Reloader(files)
    # grpc-stubs types the fetcher as never returning None; gRPC documents None as "keep".
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], reloader)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial, fetcher, require_client_authentication=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """mTLS channel credentials: trust ``files.root``, present ``files.chain``. Files are
    read now; a channel created after a rotation uses the new ones."""
    key, chain, root = _material(files)
    return grpc.ssl_channel_credentials(root, key, chain)


def channel_options(server_dns: str) -> list[tuple[str, str]]:
    """Channel options checking the server's certificate against its federation name
    (``node.it.fedmatch.eu``) whatever address is dialled, e.g. 127.0.0.1:port."""
    try:
        parse_dns(server_dns)
    except PermissionDenied as exc:
        raise InvalidInput(f"server name: {exc}") from None
    return [("grpc.ssl_target_name_override", server_dns)]


def _property(auth: Mapping[str, object], name: str) -> list[bytes]:
    values = auth.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, bytes) for v in values):
        raise PermissionDenied("peer authentication context is malformed")
    return cast(list[bytes], values)


def peer_identity(
    context: grpc.ServicerContext,
    root_pem: bytes,
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime | None = None,
) -> Identity:
    """The verified identity of the peer of a call; raises PermissionDenied if the call did
    not come over mTLS or its certificate does not verify (including revocation)."""
    # grpc-stubs says Mapping[str, bytes]; gRPC returns lists of bytes per property.
    auth = cast(Mapping[str, object], context.auth_context())
    leaf = _property(auth, _PEER_CERT)
    if len(leaf) != 1:
        raise PermissionDenied("peer presented no client certificate")
    chain_pem = b"\n".join(leaf + _property(auth, _PEER_CHAIN))
    return verify_peer(chain_pem, root_pem, crls, now)
