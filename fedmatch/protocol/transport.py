"""A party's transport security: mTLS credentials, peer verification, trust for signed
requests, loaded from a ``[tls]`` table.

Every party holds a leaf certificate of the federation PKI (:mod:`fedmatch.pki`), its key
and chain, the federation root (and intermediates) it trusts, and the revocation lists it
checks peers against. The root and CRL files are re-read when they change, so a revocation
takes effect without a restart; the server's own key and chain are reloaded by gRPC
(:func:`fedmatch.pki.credentials.server_credentials`).

``insecure`` (the CLI's ``--dev-insecure``) turns off TLS on the wire only: signed requests
are still verified against the PKI, and the servers warn at every start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from fedmatch.config import read_toml
from fedmatch.errors import ConfigError
from fedmatch.grpcutil.auth import AccessRule, AuthorizingInterceptor
from fedmatch.grpcutil.shares import PeerShares
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.credentials import channel_credentials, peer_identity, server_credentials
from fedmatch.pki.names import Identity
from fedmatch.pki.passphrase import read_passphrase
from fedmatch.pki.verify import load_crls, verify_peer

__all__ = ["Security", "load_security", "load_tls_files"]

# An encrypted key file's passphrase (``pki csr`` with a passphrase): from the environment
# or a file (mode 0600), never in the TOML file itself.
_PASSPHRASE_KEYS = ("key_passphrase_env", "key_passphrase_file")

log = logging.getLogger("fedmatch.protocol.transport")


@dataclass
class _Trust:
    root_pem: bytes
    crls: list[x509.CertificateRevocationList]
    stamp: tuple[tuple[float, int], ...]


class Security:
    def __init__(self, files: TlsFiles, insecure: bool = False) -> None:
        self.files = files
        self.insecure = insecure
        self._lock = threading.Lock()
        self._trust: _Trust | None = None
        self._trust_now()
        self._server_credentials: grpc.ServerCredentials | None = None

    def _stamp(self) -> tuple[tuple[float, int], ...]:
        out = []
        for path in (self.files.root, *self.files.crls):
            try:
                st = path.stat()
            except FileNotFoundError:
                raise ConfigError(f"tls: {path} does not exist") from None
            out.append((st.st_mtime, st.st_size))
        return tuple(out)

    def _trust_now(self) -> _Trust:
        stamp = self._stamp()
        with self._lock:
            if self._trust is None or self._trust.stamp != stamp:
                self._trust = _Trust(
                    self.files.root.read_bytes(), load_crls(self.files.crls), stamp
                )
            return self._trust

    # -- what this party presents ----------------------------------------------------------

    def chain_pem(self) -> bytes:
        return self.files.chain.read_bytes()

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.insecure:
            return None
        if self._server_credentials is None:
            self._server_credentials = server_credentials(self.files, reload=True)
        return self._server_credentials

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        return None if self.insecure else channel_credentials(self.files)

    # -- what it checks of others -------------------------------------------------------

    def verify_chain(self, chain_pem: bytes) -> Identity:
        """A PEM chain (e.g. of a signed request's signer) -> its verified identity."""
        trust = self._trust_now()
        return verify_peer(chain_pem, trust.root_pem, trust.crls)

    def identify(self, context: grpc.ServicerContext) -> Identity:
        trust = self._trust_now()
        return peer_identity(context, trust.root_pem, trust.crls)

    def interceptor(
        self,
        rules: Mapping[str, AccessRule],
        own_state: str | None = None,
        shares: PeerShares | None = None,
    ) -> AuthorizingInterceptor:
        identify = None if self.insecure else self.identify
        return AuthorizingInterceptor(rules, identify, own_state, shares)


def load_security(path: Path | None, insecure: bool = False, **overrides: Any) -> Security:
    """The ``[tls]`` table: key, chain, root (a bundle of the federation root and its
    intermediates), crls (list), and for an encrypted key file its passphrase's source,
    key_passphrase_env or key_passphrase_file. Relative paths are relative to the TOML
    file."""
    return Security(load_tls_files(path, **overrides), insecure=insecure)


def load_tls_files(path: Path | None, **overrides: Any) -> TlsFiles:
    """The files the ``[tls]`` table names, checked as values only (none is opened but
    the key's passphrase file, if the table names one)."""
    raw: dict[str, Any] = dict(read_toml(path).get("tls", {})) if path is not None else {}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(raw) - {"key", "chain", "root", "crls", *_PASSPHRASE_KEYS}
    if unknown:
        raise ConfigError(f"tls.{sorted(unknown)[0]}: unknown key")
    for key in ("key", "chain", "root"):
        if not isinstance(raw.get(key), str | Path) or not str(raw[key]):
            raise ConfigError(f"tls.{key} is required (a file of `fedmatch pki issue`)")
    crls = raw.get("crls", [])
    if not isinstance(crls, list):
        raise ConfigError("tls.crls must be a list of CRL files")

    def rel(value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() or path is None else path.parent / p

    env, file = raw.get("key_passphrase_env"), raw.get("key_passphrase_file")
    if env is not None and (not isinstance(env, str) or not env):
        raise ConfigError("tls.key_passphrase_env must name an environment variable")
    if file is not None and (not isinstance(file, str | Path) or not str(file)):
        raise ConfigError("tls.key_passphrase_file must be a file's path")
    passphrase = read_passphrase(env, rel(file) if file is not None else None)
    return TlsFiles(
        rel(raw["key"]), rel(raw["chain"]), rel(raw["root"]), tuple(rel(c) for c in crls),
        key_passphrase=passphrase,
    )  # fmt: skip
