"""The federation's certificate authorities: root, per-scope intermediates, leaves, CRLs.

The hierarchy has two levels below the root:

* the federation root CA (ECDSA P-256, self-signed, ``pathLen=1``), files ``root.key`` and
  ``root.pem``;
* one intermediate CA per scope, i.e. per member state and one for ``eu`` (ECDSA P-256,
  ``pathLen=0``), files ``<scope>.key``/``<scope>.pem`` (``it.pem``, ``eu.pem``). Each
  carries a critical name constraint permitting only ``<scope>.fedmatch.eu``, so the French
  CA cannot issue a certificate for a German node: both gRPC's TLS stack and
  :mod:`fedmatch.pki.verify` refuse such a chain;
* leaf certificates (ECDSA P-256: gRPC's TLS cannot handshake with Ed25519 certificates)
  for serverAuth and clientAuth, named as :mod:`fedmatch.pki.names` says, binding the
  holder's Ed25519 signing key in a private extension.

A CA directory holds the CA's key and certificate and a copy of ``root.pem``;
:func:`create_intermediate` writes that copy, so a member state's CA directory is
self-sufficient and the root key never has to be where leaves are issued. Each CA keeps its
revocation list beside its key (``root.crl``, ``<scope>.crl``).

Private keys are written with mode 0600 and refused on load if group or other may access
them. A CA key is encrypted with a passphrase when one is given (PKCS#8,
``BestAvailableEncryption``; :mod:`fedmatch.pki.passphrase` reads it from an environment
variable or a file) and every function that uses a CA key takes that passphrase. Leaf TLS
keys made by :func:`issue` are written in clear; a party's own key from
:mod:`fedmatch.pki.csr` may be encrypted (``TlsFiles.key_passphrase``: decrypted in memory
for gRPC by :mod:`fedmatch.pki.credentials`). Member states that generate their own CA
key and have the root sign a request use :mod:`fedmatch.pki.csr`. CA keys and
certificates are never overwritten; a leaf's files in ``out`` are replaced atomically, so
a server reading them with ``reload=True`` never sees a torn file. Mistakes by the caller
raise :class:`InvalidInput`; unusable files raise :class:`ConfigError` naming the path.
No message carries key material.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmatch.audit.note import NoteSigner
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.fileio import read_file, write_file
from fedmatch.pki.names import (
    SIGNING_KEY_OID,
    dns_name,
    normalize_scope,
    scope_domain,
    signing_key_name,
)

__all__ = [
    "ROOT",
    "TlsFiles",
    "create_intermediate",
    "create_root",
    "issue",
    "publish_crl",
    "revoke",
]

# The name of the root CA's files in a CA directory; intermediates use their scope in
# lower case ("it", "eu").
ROOT = "root"
LEAF_KEY, LEAF_CHAIN, LEAF_ROOT = "key.pem", "cert.pem", "ca.pem"

# Certificates start this much before "now", so that a peer whose clock is slightly behind
# does not see a certificate that is not yet valid.
_BACKDATE = timedelta(minutes=5)
# CRLs are refreshed by every revoke/publish; their nextUpdate is informational here, as
# verify.check_not_revoked applies a CRL's revocations whatever its age (revocation is final).
_CRL_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    """A party's TLS material: its private key, its chain (leaf then intermediate), the
    federation root certificate(s) it trusts, and CRLs to check peers against; the key's
    passphrase if the key file is encrypted (it is then decrypted in memory only)."""

    key: Path
    chain: Path
    root: Path
    crls: tuple[Path, ...] = ()
    key_passphrase: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crls", tuple(Path(p) for p in self.crls))


# --------------------------------------------------------------------------------------------
# Files


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _days(days: int, what: str) -> timedelta:
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise InvalidInput(f"{what} validity must be a positive number of days")
    return timedelta(days=days)


# The shortest passphrase accepted for a CA key (as for the desk's protected keys).
MIN_PASSPHRASE = 10


def check_passphrase(passphrase: bytes) -> None:
    """Raise InvalidInput for a passphrase too short to protect a CA key."""
    if not isinstance(passphrase, bytes) or len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInput(f"a CA key's passphrase has at least {MIN_PASSPHRASE} characters")


def key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted under ``passphrase`` when one is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase is not None:
        check_passphrase(passphrase)
        encryption = serialization.BestAvailableEncryption(passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def load_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 key in ``path``, decrypted with ``passphrase`` if it is encrypted;
    raises ConfigError naming the path (and never the passphrase)."""
    data = read_file(path, private=True)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and passphrase is None:
        raise ConfigError(
            f"key file {path} is encrypted: give its passphrase "
            "(--passphrase-env VARIABLE or --passphrase-file FILE)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError):
        if encrypted:
            raise ConfigError(f"the passphrase does not decrypt key file {path}") from None
        raise ConfigError(f"key file {path} does not hold a PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"key file {path} does not hold an ECDSA P-256 key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    data = read_file(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{path} does not hold a PEM certificate") from None


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    directory: Path
    name: str


def _ca_name(ca: str) -> str:
    """ "root" or a scope, as the stem of the CA's files."""
    if ca.lower() == ROOT:
        return ROOT
    return normalize_scope(ca).lower()


def _load_ca(directory: Path, ca: str, passphrase: bytes | None = None) -> _CA:
    name = _ca_name(ca)
    directory = Path(directory)
    key = load_key(directory / f"{name}.key", passphrase)
    cert = _load_cert(directory / f"{name}.pem")
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{directory / (name + '.key')} is not the key of {name}.pem")
    return _CA(key, cert, directory, name)


# --------------------------------------------------------------------------------------------
# Certificates


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _aki(issuer: _CA) -> x509.AuthorityKeyIdentifier:
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def ca_subject(scope: str) -> x509.Name:
    """The subject of the CA of ``scope`` ("fedmatch IT CA")."""
    return _subject(f"fedmatch {_ca_name(scope).upper()} CA")


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedmatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(
    builder: x509.CertificateBuilder, now: datetime, days: timedelta, issuer: _CA | None
) -> x509.CertificateBuilder:
    not_after = now + days
    if issuer is not None:
        # A certificate never outlives its issuer: it would stop verifying before its own
        # expiry, which surprises whoever planned the renewal.
        not_after = min(not_after, issuer.cert.not_valid_after_utc)
    if not_after <= now:
        raise InvalidInput("the issuing CA has expired")
    return (
        builder.not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .serial_number(x509.random_serial_number())
    )


def create_root(
    directory: Path,
    days: int = 3650,
    now: datetime | None = None,
    passphrase: bytes | None = None,
) -> Path:
    """Create the federation root CA in ``directory`` (root.key 0600, encrypted under
    ``passphrase`` if given; root.pem); returns the certificate's path. Refuses to replace
    an existing root."""
    directory = Path(directory)
    when, validity = _now(now), _days(days, "root")
    for name in ("root.key", "root.pem"):
        if (directory / name).exists():
            raise ConfigError(f"{directory / name} already exists; refusing to overwrite it")
    key = _new_key()
    subject = _subject("fedmatch federation root CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
    )
    cert = _validity(builder, when, validity, None).sign(key, hashes.SHA256())
    write_file(directory / "root.key", key_pem(key, passphrase), 0o600, replace=False)
    write_file(directory / "root.pem", cert_pem(cert), 0o644, replace=False)
    return directory / "root.pem"


def intermediate_certificate(
    root: _CA, scope: str, public_key: ec.EllipticCurvePublicKey, days: int, now: datetime | None
) -> x509.Certificate:
    """The certificate of the CA of ``scope``, signed by ``root``: ``pathLen=0``, CA key
    usage, and the critical name constraint permitting only ``<scope>.fedmatch.eu``."""
    name = _ca_name(scope)
    if name == ROOT:
        raise InvalidInput("an intermediate's scope is a member state or 'eu'")
    when, validity = _now(now), _days(days, "intermediate")
    constraint = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(scope_domain(name))], excluded_subtrees=None
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca_subject(name))
        .issuer_name(root.cert.subject)
        .public_key(public_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(constraint, critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(root), critical=False)
    )
    return _validity(builder, when, validity, root).sign(root.key, hashes.SHA256())


def write_intermediate(root: _CA, name: str, cert: x509.Certificate, out: Path) -> Path:
    """Write ``out/<name>.pem`` (never over an existing one) and a copy of root.pem
    (checked to be the same root if already there); returns the certificate's path."""
    out = Path(out)
    root_pem = cert_pem(root.cert)
    copy = out / "root.pem"
    if copy.exists() and read_file(copy) != root_pem:
        raise ConfigError(f"{copy} holds a different root certificate")
    write_file(out / f"{name}.pem", cert_pem(cert), 0o644, replace=False)
    if not copy.exists():
        write_file(copy, root_pem, 0o644, replace=False)
    return out / f"{name}.pem"


def create_intermediate(
    root_dir: Path,
    scope: str,
    out: Path,
    days: int = 1825,
    now: datetime | None = None,
    root_passphrase: bytes | None = None,
    passphrase: bytes | None = None,
) -> Path:
    """Create the intermediate CA of ``scope`` (a member state or "eu"), signed by the root
    in ``root_dir`` (its key decrypted with ``root_passphrase``), as ``out/<scope>.key``
    (0600, encrypted under ``passphrase`` if given) and ``out/<scope>.pem``; also copies
    root.pem into ``out``. Returns the certificate's path."""
    name = _ca_name(scope)
    if name == ROOT:
        raise InvalidInput("an intermediate's scope is a member state or 'eu'")
    out = Path(out)
    root = _load_ca(root_dir, ROOT, root_passphrase)
    for path in (out / f"{name}.key", out / f"{name}.pem"):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite it")
    copy = out / "root.pem"
    if copy.exists() and read_file(copy) != cert_pem(root.cert):
        raise ConfigError(f"{copy} holds a different root certificate")
    key = _new_key()
    cert = intermediate_certificate(root, name, key.public_key(), days, now)
    write_file(out / f"{name}.key", key_pem(key, passphrase), 0o600, replace=False)
    return write_intermediate(root, name, cert, out)


def signing_public_key(
    signing_key: NoteSigner | Path, role: str, scope: str, instance: str
) -> bytes:
    signer = signing_key if isinstance(signing_key, NoteSigner) else NoteSigner.load(signing_key)
    # A node's and the coordinator's bound key is their audit-log key: a key under another
    # name (say, another state's log key) is a mix-up that would bind the wrong log.
    expected = signing_key_name(role, scope, instance)
    if role in ("node", "coordinator") and signer.name != expected:
        raise InvalidInput(f"the {role}'s signing key must be named {expected!r}")
    return signer.public_key_bytes()


def _check_constraints(ca: _CA, dns: str) -> None:
    """Refuse at issuance what every verifier would refuse: a name outside the CA's scope."""
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        raise ConfigError(f"{ca.name}.pem is not a scope CA (no name constraints)") from None
    for subtree in constraints.permitted_subtrees or []:
        if isinstance(subtree, x509.DNSName) and dns.endswith("." + subtree.value):
            return
    raise InvalidInput(f"the {ca.name} CA may not issue {dns}")


def leaf_certificate(
    ca: _CA,
    dns: str,
    public_key: ec.EllipticCurvePublicKey,
    bound: bytes,
    days: int,
    now: datetime | None,
) -> x509.Certificate:
    """The leaf certificate naming ``dns`` (checked against ``ca``'s scope), for the TLS
    key ``public_key``, binding the raw Ed25519 signing key ``bound``, signed by ``ca``."""
    when, validity = _now(now), _days(days, "leaf")
    _check_constraints(ca, dns)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, bound), critical=False)
    )
    return _validity(builder, when, validity, ca).sign(ca.key, hashes.SHA256())


def write_leaf(ca: _CA, root_cert: x509.Certificate, cert: x509.Certificate, out: Path) -> TlsFiles:
    """Write ``out/cert.pem`` (leaf then intermediate) and ``out/ca.pem`` (root),
    replacing earlier ones atomically; the key is the caller's business."""
    out = Path(out)
    files = TlsFiles(key=out / LEAF_KEY, chain=out / LEAF_CHAIN, root=out / LEAF_ROOT)
    write_file(files.chain, cert_pem(cert) + cert_pem(ca.cert), 0o644, replace=True)
    write_file(files.root, cert_pem(root_cert), 0o644, replace=True)
    return files


def issue(
    ca_dir: Path,
    role: str,
    scope: str,
    instance: str,
    signing_key: NoteSigner | Path,
    out: Path,
    days: int = 90,
    now: datetime | None = None,
    ca_passphrase: bytes | None = None,
) -> TlsFiles:
    """Issue a leaf certificate for ``[instance.]role.scope.fedmatch.eu`` with the
    intermediate CA of ``scope`` found in ``ca_dir`` (``<scope>.key``, decrypted with
    ``ca_passphrase`` if encrypted, ``<scope>.pem``, ``root.pem``), binding the Ed25519
    public key of ``signing_key`` (a signer or its key file). Writes ``out/key.pem`` (0600,
    a new ECDSA P-256 key), ``out/cert.pem`` (leaf then intermediate) and ``out/ca.pem``
    (root), replacing earlier ones atomically."""
    dns = dns_name(role, scope, instance)
    _days(days, "leaf")
    ca = _load_ca(ca_dir, scope, ca_passphrase)
    _check_constraints(ca, dns)
    root_cert = _load_cert(Path(ca_dir) / "root.pem")
    bound = signing_public_key(signing_key, role, scope, instance)
    key = _new_key()
    cert = leaf_certificate(ca, dns, key.public_key(), bound, days, now)
    # Key first: a reloading server checks that key and certificate match before switching,
    # so the short moment where only the key is new is skipped, never served.
    write_file(Path(out) / LEAF_KEY, key_pem(key), 0o600, replace=True)
    return write_leaf(ca, root_cert, cert, out)


# --------------------------------------------------------------------------------------------
# Revocation


def _existing_revocations(ca: _CA, path: Path) -> tuple[list[x509.RevokedCertificate], int]:
    """The revoked entries and CRL number of the CA's current CRL at ``path``, if any."""
    if not path.exists():
        return [], 0
    try:
        crl = x509.load_pem_x509_crl(read_file(path))
    except ValueError:
        raise ConfigError(f"{path} does not hold a PEM CRL") from None
    public = ca.key.public_key()
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(public):
        raise ConfigError(f"{path} is not a CRL of the {ca.name} CA; refusing to extend it")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return list(crl), number


def _sign_crl(
    ca_dir: Path,
    ca: str,
    crl_out: Path | None,
    now: datetime | None,
    add: int | None,
    passphrase: bytes | None,
) -> Path:
    authority = _load_ca(ca_dir, ca, passphrase)
    path = Path(crl_out) if crl_out is not None else authority.directory / f"{authority.name}.crl"
    when = _now(now)
    revoked, number = _existing_revocations(authority, path)
    if add is not None and all(r.serial_number != add for r in revoked):
        new = x509.RevokedCertificateBuilder().serial_number(add).revocation_date(when)
        revoked.append(new.build())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(when)
        .next_update(when + timedelta(days=_CRL_DAYS))
        .add_extension(x509.CRLNumber(number + 1), critical=False)
        .add_extension(_aki(authority), critical=False)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(authority.key, hashes.SHA256())
    write_file(path, crl.public_bytes(serialization.Encoding.PEM), 0o644, replace=True)
    return path


def publish_crl(
    ca_dir: Path,
    ca: str,
    crl_out: Path | None = None,
    now: datetime | None = None,
    passphrase: bytes | None = None,
) -> Path:
    """(Re)sign the CRL of CA ``ca`` ("root" or a scope) kept in ``crl_out`` (default
    ``ca_dir/<ca>.crl``): same revocations, a higher CRL number, fresh dates. Creates an
    empty CRL if there is none. Returns its path."""
    return _sign_crl(ca_dir, ca, crl_out, now, None, passphrase)


def revoke(
    ca_dir: Path,
    ca: str,
    serial: int,
    crl_out: Path | None = None,
    now: datetime | None = None,
    passphrase: bytes | None = None,
) -> Path:
    """Add ``serial`` to the CRL of CA ``ca`` ("root" to revoke an intermediate, or the
    scope whose CA issued the leaf), keeping earlier revocations; revoking twice changes
    only the CRL's dates. Returns the CRL's path (default ``ca_dir/<ca>.crl``)."""
    if isinstance(serial, bool) or not isinstance(serial, int) or not 0 < serial < 1 << 159:
        raise InvalidInput("serial must be a positive certificate serial number")
    return _sign_crl(ca_dir, ca, crl_out, now, serial, passphrase)
