"""Federation identities: the DNS names of certificates and what they say about their holder.

Every leaf certificate of the federation names its holder with exactly one DNS subject
alternative name, ``[<instance>.]<role>.<scope>.fedmatch.eu``:

* ``scope`` is a federation member state's code in lower case (``it``, ``de``, ...) or ``eu``
  for federation-level bodies (the coordinator's operator, EU-level auditors);
* ``role`` is one of :data:`ROLES`; a ``node`` is always a member state's, the
  ``coordinator`` is always federation-level (``eu``);
* ``instance`` is a single DNS label telling several holders of one role apart
  (``desk7.operator.de.fedmatch.eu``); optional, except for an ``officer``, whose instance
  is the official's id (``maria.officer.it.fedmatch.eu``): the operator id every request
  they sign names.

An ``operator`` certificate is a workstation's: it makes the mTLS channel to the coordinator
or the node. An ``officer`` certificate is a person's, like a ``verifier``'s: the key it
binds signs that officer's requests (:mod:`fedmatch.protocol.statement`).

The certificate may also carry, in the non-critical private extension
:data:`SIGNING_KEY_OID`, the raw 32-byte Ed25519 public key of the holder's application-level
signing key (a :class:`~fedmatch.audit.note.NoteSigner`), which binds that key to the TLS
identity. :func:`identity_from_certificate` reads all of this strictly: any certificate that
does not follow the scheme exactly is refused with :class:`~fedmatch.errors.PermissionDenied`.
It checks names only; chains, expiry and revocation are :mod:`fedmatch.pki.verify`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedmatch.domain import FEDERATION_STATES
from fedmatch.errors import InvalidInput, PermissionDenied

__all__ = [
    "DOMAIN",
    "EU_SCOPE",
    "PERSONAL_ROLES",
    "ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "dns_name",
    "identity_from_certificate",
    "normalize_scope",
    "parse_dns",
    "scope_domain",
    "signing_key_name",
]

ROLES = ("node", "coordinator", "auditor", "operator", "verifier", "officer")
# Roles held by a person, whose certificate must name them (its instance).
PERSONAL_ROLES = ("officer",)
# The federation's DNS suffix; every certificate name and CA name constraint lies under it.
DOMAIN = "fedmatch.eu"
# The scope of federation-level bodies, as written in an Identity (states are "IT", "DE"...).
EU_SCOPE = "EU"
# A UUID-derived OID (X.667, arc 2.25): needs no registration and cannot collide.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.261808313883334852113359055476545935700")

_ED25519_KEY_SIZE = 32
# One DNS label, lower case letters, digits and inner hyphens (RFC 1123), at most 63 long.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_scope(scope: str) -> str:
    """A scope in Identity form ("IT", "EU") from either case; raises InvalidInput."""
    if not isinstance(scope, str):
        raise InvalidInput("scope must be a string")
    upper = scope.upper()
    # isascii: str.upper maps some non-ASCII letters onto ASCII ones.
    if not scope.isascii() or (upper != EU_SCOPE and upper not in FEDERATION_STATES):
        raise InvalidInput(f"scope {scope!r} is neither a federation member state nor 'eu'")
    return upper


def _role_scope_problem(role: str, scope: str, instance: str) -> str | None:
    if role not in ROLES:
        return f"role {role!r} is not one of {', '.join(ROLES)}"
    if role in ("node", "officer") and scope == EU_SCOPE:
        return f"a {role} belongs to a member state, not to the 'eu' scope"
    if role == "coordinator" and scope != EU_SCOPE:
        return "the coordinator is federation-level: its scope is 'eu'"
    if role in PERSONAL_ROLES and not instance:
        return f"an {role} certificate names its holder: give the person's id as instance"
    return None


def scope_domain(scope: str) -> str:
    """The DNS subtree of a scope, ``<scope>.fedmatch.eu``: a scope's CA may name only it."""
    return f"{normalize_scope(scope).lower()}.{DOMAIN}"


def dns_name(role: str, scope: str, instance: str = "") -> str:
    """The certificate name ``[<instance>.]<role>.<scope>.fedmatch.eu``; raises InvalidInput."""
    upper = normalize_scope(scope)
    if not isinstance(instance, str) or (instance and not _LABEL.fullmatch(instance)):
        raise InvalidInput(
            "instance must be one DNS label: lower-case letters, digits, inner hyphens"
        )
    problem = _role_scope_problem(role, upper, instance)
    if problem is not None:
        raise InvalidInput(problem)
    prefix = f"{instance}." if instance else ""
    return f"{prefix}{role}.{upper.lower()}.{DOMAIN}"


def signing_key_name(role: str, scope: str, instance: str = "") -> str:
    """The conventional NoteSigner name of a holder: a node's and the coordinator's is the
    origin of their audit log (``fedmatch/node/IT``, ``fedmatch/coordinator``); anyone
    else's is the certificate's DNS name."""
    name = dns_name(role, scope, instance)
    if role == "node":
        return f"fedmatch/node/{normalize_scope(scope)}"
    if role == "coordinator":
        return "fedmatch/coordinator"
    return name


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate names. ``scope`` is "IT", "DE", ... or "EU";
    ``signing_key`` is the holder's raw Ed25519 public key, ``b""`` if the certificate
    binds none."""

    role: str
    scope: str
    dns: str
    instance: str
    signing_key: bytes
    serial: int
    not_after: datetime

    def __post_init__(self) -> None:
        if self.dns != dns_name(self.role, self.scope, self.instance):
            raise InvalidInput("identity dns does not match its role, scope and instance")
        if self.scope != normalize_scope(self.scope):
            raise InvalidInput("identity scope must be upper case")
        if not isinstance(self.signing_key, bytes) or len(self.signing_key) not in (
            0,
            _ED25519_KEY_SIZE,
        ):
            raise InvalidInput("identity signing key must be 32 raw Ed25519 bytes or empty")
        if isinstance(self.serial, bool) or not isinstance(self.serial, int) or self.serial <= 0:
            raise InvalidInput("identity serial must be a positive integer")
        if not isinstance(self.not_after, datetime) or self.not_after.tzinfo is None:
            raise InvalidInput("identity not_after must be a timezone-aware datetime")

    @property
    def member_state(self) -> str | None:
        """The member state this identity acts for, or None for federation-level bodies."""
        return None if self.scope == EU_SCOPE else self.scope


def parse_dns(name: str) -> tuple[str, str, str]:
    """(role, scope, instance) of a certificate DNS name, scope upper case ("IT", "EU");
    raises PermissionDenied if the name does not follow the scheme exactly."""
    labels = name.split(".")
    if len(labels) not in (4, 5) or ".".join(labels[-2:]) != DOMAIN:
        raise PermissionDenied(
            "certificate name is not of the form [instance.]role.scope." + DOMAIN
        )
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise PermissionDenied("certificate name has a label that is not lower-case LDH")
    instance = labels[0] if len(labels) == 5 else ""
    role, scope = labels[-4], labels[-3]
    if role not in ROLES:
        raise PermissionDenied(f"certificate names an unknown role {role!r}")
    upper = scope.upper()
    if upper != EU_SCOPE and upper not in FEDERATION_STATES:
        raise PermissionDenied(f"certificate names an unknown scope {scope!r}")
    problem = _role_scope_problem(role, upper, instance)
    if problem is not None:
        raise PermissionDenied(f"certificate name: {problem}")
    return role, upper, instance


def _signing_key(cert: x509.Certificate) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID)
    except x509.ExtensionNotFound:
        return b""
    if ext.critical or not isinstance(ext.value, x509.UnrecognizedExtension):
        raise PermissionDenied("certificate signing-key extension is malformed")
    raw = ext.value.value
    if len(raw) != _ED25519_KEY_SIZE:
        raise PermissionDenied("certificate signing key is not a 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise PermissionDenied("certificate signing key is not a valid Ed25519 key") from None
    return raw


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """The identity a leaf certificate names; raises PermissionDenied if its name (or its
    signing-key extension) does not follow the federation's scheme exactly."""
    try:
        extensions = cert.extensions
    except ValueError:
        # cryptography parses extensions lazily and raises ValueError on malformed DER.
        raise PermissionDenied("certificate has malformed extensions") from None
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PermissionDenied("certificate has no subject alternative name") from None
    names = list(san)
    if len(names) != 1 or not isinstance(names[0], x509.DNSName):
        raise PermissionDenied("certificate must name exactly one DNS name and nothing else")
    dns = names[0].value
    role, scope, instance = parse_dns(dns)
    try:
        return Identity(
            role=role,
            scope=scope,
            dns=dns,
            instance=instance,
            signing_key=_signing_key(cert),
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
        )
    except InvalidInput as exc:
        # Only a foreign certificate gets here (say, a serial of 0): refuse it as such.
        raise PermissionDenied(f"certificate is malformed: {exc}") from None
