"""Verification of a peer's certificate chain at the application level.

gRPC's TLS layer already checks a peer's chain against the configured root, its expiry and
the intermediates' name constraints, but it does not know our CRLs (gRPC Python has no CRL
setting) and it hands the servicer bare strings. :func:`verify_peer` repeats the chain
check with ``cryptography``'s X.509 verifier (RFC 5280 path building, name constraints,
validity, clientAuth), adds the revocation check and a scope check, and returns the
holder's :class:`~fedmatch.pki.names.Identity`. Every refusal raises
:class:`~fedmatch.errors.PermissionDenied` with a short reason; it never returns a bool.

Trust bundle: in ``root_pem`` the self-issued certificates are the trust anchors; any other
certificate in it is only a candidate intermediate, exactly like those the peer sent, and
must itself chain to an anchor. Intermediates are therefore never trusted by being present.

Accepted chains are remembered (:class:`_Accepted`): a node checks the coordinator's chain on
every call and the operator's chain in every signed request, ~1 ms each, dozens of times per
second under load. A remembered acceptance is reused only for the very same chain bytes,
root bundle bytes and the very same CRL objects (a reloaded CRL file is a new object, so a
revocation takes effect at once), and only at a time inside every certificate's validity
window of the verified chain, where the full check would give the same answer. Refusals are never
remembered, so nothing an unauthenticated peer sends grows the cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fedmatch.errors import ConfigError, PermissionDenied
from fedmatch.fileio import read_file
from fedmatch.pki.names import Identity, identity_from_certificate, scope_domain

__all__ = ["check_not_revoked", "load_crls", "verify_peer"]

# root -> scope CA -> leaf. A peer sending more than a handful of certificates is not one
# of ours; the bound caps the path-building work an unauthenticated peer can cause.
_CHAIN_LENGTH = 3
_MAX_PRESENTED = 8
# Remembered acceptances: a federation has a few hundred parties; an entry is reused for at
# most this long even inside the certificates' validity (a bound on any staleness).
_ACCEPTED_CAPACITY = 1024
_ACCEPTED_SECONDS = 300.0


@dataclass(frozen=True)
class _Accepted:
    # The CRL objects checked (compared by identity; held, so no id is ever reused).
    crls: tuple[x509.CertificateRevocationList, ...]
    identity: Identity
    not_before: datetime
    not_after: datetime
    until: float  # monotonic time after which the chain is verified again


class _AcceptedChains:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Accepted] = OrderedDict()

    @staticmethod
    def key(chain_pem: bytes, root_pem: bytes) -> bytes:
        h = hashlib.sha256(len(chain_pem).to_bytes(8, "big") + chain_pem)
        h.update(root_pem)
        return h.digest()

    def get(
        self, key: bytes, crls: Sequence[x509.CertificateRevocationList], when: datetime
    ) -> Identity | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if (
                len(entry.crls) != len(crls)
                or any(a is not b for a, b in zip(entry.crls, crls, strict=False))
                or time.monotonic() > entry.until
                or not entry.not_before <= when <= entry.not_after
            ):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.identity

    def put(
        self,
        key: bytes,
        crls: Sequence[x509.CertificateRevocationList],
        identity: Identity,
        chain: Sequence[x509.Certificate],
    ) -> None:
        entry = _Accepted(
            tuple(crls),
            identity,
            max(c.not_valid_before_utc for c in chain),
            min(c.not_valid_after_utc for c in chain),
            time.monotonic() + _ACCEPTED_SECONDS,
        )
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > _ACCEPTED_CAPACITY:
                self._entries.popitem(last=False)


_ACCEPTED = _AcceptedChains()


def load_crls(paths: Iterable[Path]) -> list[x509.CertificateRevocationList]:
    """Read PEM CRLs (one per file); raises ConfigError naming an unreadable file. Their
    signatures are checked when used, against the certificate of the CA they name."""
    crls: list[x509.CertificateRevocationList] = []
    for path in paths:
        path = Path(path)
        try:
            crls.append(x509.load_pem_x509_crl(read_file(path)))
        except ValueError:
            raise ConfigError(f"{path} does not hold a PEM CRL") from None
    return crls


def _issued_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    if crl.issuer != issuer.subject:
        return False
    public = issuer.public_key()
    # Our CAs are ECDSA P-256; a CRL is only trusted if the CA's own key signed it, so a
    # CRL from a replaced CA key of the same name (or a forged one) revokes nothing.
    return isinstance(public, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public)


def check_not_revoked(
    chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
) -> None:
    """Raise PermissionDenied if a certificate of a verified ``chain`` (leaf first, root
    last) is revoked by a CRL of its issuer: the leaf by its scope CA, the scope CA by the
    root. CRLs of other CAs are ignored, and so are their ages: a revocation is final, so
    a stale CRL still revokes what it lists."""
    for position, (cert, issuer) in enumerate(pairwise(chain)):
        for crl in crls:
            if not _issued_by(crl, issuer):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                what = "peer certificate" if position == 0 else "peer's issuing CA"
                raise PermissionDenied(f"{what} has been revoked")


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: a caller's
        # certificate with a bad version field must be refused, not fail as INTERNAL
        raise PermissionDenied(f"{what} is not a PEM certificate chain") from None


def _check_scope(identity: Identity, intermediate: x509.Certificate) -> None:
    """The issuing CA must be constrained to exactly the leaf's scope. Name constraints
    already refuse names outside the CA's subtree; this also refuses a leaf issued by an
    unconstrained CA, should one ever be signed by mistake."""
    try:
        constraints = intermediate.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        raise PermissionDenied("peer's issuing CA is not constrained to a scope") from None
    permitted = constraints.value.permitted_subtrees or []
    if permitted != [x509.DNSName(scope_domain(identity.scope))]:
        raise PermissionDenied("peer's issuing CA is not the CA of the peer's scope")


def verify_peer(
    chain_pem: bytes,
    root_pem: bytes,
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime | None = None,
) -> Identity:
    """Verify a peer's chain (PEM, leaf first, then any intermediates) as a client
    certificate of the federation rooted in ``root_pem``, at ``now`` (default: the current
    time), and return the identity it names. Raises PermissionDenied."""
    when = now if now is not None else datetime.now(UTC)
    key = _AcceptedChains.key(chain_pem, root_pem)
    remembered = _ACCEPTED.get(key, crls, when)
    if remembered is not None:
        return remembered
    presented = _certificates(chain_pem, "peer certificate")
    if not presented:
        raise PermissionDenied("peer presented no certificate")
    if len(presented) > _MAX_PRESENTED:
        raise PermissionDenied("peer presented too many certificates")
    try:
        bundle = x509.load_pem_x509_certificates(root_pem)
    except ValueError:
        raise ConfigError("the trusted root bundle is not PEM certificates") from None
    anchors = [c for c in bundle if c.subject == c.issuer]
    if not anchors:
        raise ConfigError("the trusted root bundle holds no self-signed root certificate")
    leaf = presented[0]
    intermediates = presented[1:] + [c for c in bundle if c.subject != c.issuer]
    verifier = PolicyBuilder().store(Store(anchors)).time(when).build_client_verifier()
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        # cryptography's reasons are short and name no key material ("cert is not valid
        # at validation time", "no permitted name constraints matched SAN").
        raise PermissionDenied(f"peer certificate does not verify: {exc}") from None
    chain = verified.chain
    if len(chain) != _CHAIN_LENGTH:
        raise PermissionDenied("peer certificate is not issued by a scope CA")
    identity = identity_from_certificate(leaf)
    _check_scope(identity, chain[1])
    check_not_revoked(chain, crls)
    _ACCEPTED.put(key, crls, identity, chain)
    return identity
