"""Certificate signing requests: the PKI the way member states run it.

A member state generates its CA key itself (encrypted with a passphrase) and sends the
federation root only a request (:func:`request_ca`); the root checks it and signs it
(:func:`sign_ca_request`). The state's CA then signs its own parties' requests
(:func:`request_leaf`, :func:`sign_leaf_request`), so no key ever leaves its holder.

The signer takes from a request only its public key and the name it asks for, and refuses
what the federation would refuse: a request whose signature does not verify, a key that is
not ECDSA P-256, a CA request for another scope than the one the root operator expects, a
leaf request asking to be a CA, a name outside the signing CA's scope or breaking the naming
scheme (:mod:`fedmatch.pki.names`), or a bound signing key without proof of possession.
The certificate is then built by the same functions as provisioning
(:func:`fedmatch.pki.ca.intermediate_certificate`, :func:`fedmatch.pki.ca.leaf_certificate`),
so its extensions are exactly those of a provisioned one. Policy refusals raise
:class:`~fedmatch.errors.PermissionDenied`; unreadable files raise
:class:`~fedmatch.errors.ConfigError`.

A leaf request carries the holder's Ed25519 signing key in the signing-key extension and,
as an attribute, that key's signature over the request's TLS public key: whoever asks to
bind a signing key shows that they hold it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from fedmatch.audit.note import NoteSigner
from fedmatch.errors import InvalidInput, PermissionDenied
from fedmatch.fileio import read_file, write_file
from fedmatch.pki.ca import (
    LEAF_KEY,
    ROOT,
    TlsFiles,
    _ca_name,
    _load_ca,
    _load_cert,
    ca_subject,
    check_passphrase,
    intermediate_certificate,
    key_pem,
    leaf_certificate,
    signing_public_key,
    write_intermediate,
    write_leaf,
)
from fedmatch.pki.names import SIGNING_KEY_OID, dns_name, parse_dns

__all__ = [
    "LEAF_REQUEST",
    "POSSESSION_OID",
    "request_ca",
    "request_leaf",
    "sign_ca_request",
    "sign_leaf_request",
]

LEAF_REQUEST = "request.csr"
# The request attribute holding the bound signing key's proof of possession (hex of its
# Ed25519 signature over _POSSESSION_PREFIX + the TLS key's SubjectPublicKeyInfo DER). A
# UUID-derived OID, like SIGNING_KEY_OID.
POSSESSION_OID = x509.ObjectIdentifier("2.25.177264744322371389514591009155626430871")
# A domain prefix that no note, cosignature or request statement starts with.
_POSSESSION_PREFIX = b"fedmatch certificate request: bind signing key to TLS key\n"
_ED25519_KEY_SIZE = 32


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def request_ca(out: Path, scope: str, passphrase: bytes) -> tuple[Path, Path]:
    """Generate the CA key of ``scope`` (a member state or "eu") as ``out/<scope>.key``
    (0600, encrypted under ``passphrase``, which is required) and its request
    ``out/<scope>.csr`` for the root. Returns (key, request) paths; never overwrites."""
    name = _ca_name(scope)
    if name == ROOT:
        raise InvalidInput("a CA request's scope is a member state or 'eu'")
    if not passphrase:
        raise InvalidInput("a CA key is written only encrypted: give its passphrase")
    check_passphrase(passphrase)
    out = Path(out)
    key_path, csr_path = out / f"{name}.key", out / f"{name}.csr"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(ca_subject(name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_file(key_path, key_pem(key, passphrase), 0o600, replace=False)
    write_file(csr_path, _csr_pem(csr), 0o644, replace=False)
    return key_path, csr_path


def request_leaf(
    out: Path,
    role: str,
    scope: str,
    instance: str,
    signing_key: NoteSigner | Path,
    passphrase: bytes | None,
) -> tuple[Path, Path]:
    """Generate a party's TLS key ``out/key.pem`` (0600; encrypted under ``passphrase`` if
    given, which the party's ``[tls] key_passphrase_env`` or ``_file`` then names) and its
    request ``out/request.csr`` naming
    ``[instance.]role.scope.fedmatch.eu`` and binding ``signing_key`` (named as
    provisioning requires, with its proof of possession). Returns (key, request) paths."""
    dns = dns_name(role, scope, instance)
    signer = signing_key if isinstance(signing_key, NoteSigner) else NoteSigner.load(signing_key)
    bound = signing_public_key(signer, role, scope, instance)
    key = ec.generate_private_key(ec.SECP256R1())
    proof = signer.sign(_POSSESSION_PREFIX + _spki(key.public_key()))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, bound), critical=False)
        .add_attribute(POSSESSION_OID, proof.hex().encode("ascii"))
        .sign(key, hashes.SHA256())
    )
    out = Path(out)
    key_path, csr_path = out / LEAF_KEY, out / LEAF_REQUEST
    write_file(key_path, key_pem(key, passphrase), 0o600, replace=False)
    write_file(csr_path, _csr_pem(csr), 0o644, replace=True)
    return key_path, csr_path


def _read_request(path: Path) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePublicKey]:
    try:
        csr = x509.load_pem_x509_csr(read_file(Path(path)))
    except ValueError:
        raise InvalidInput(f"{path} does not hold a PEM certificate request") from None
    try:
        valid = csr.is_signature_valid
        public = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
        raise InvalidInput(f"{path} is not a well-formed certificate request") from None
    if not valid:
        raise PermissionDenied(f"the signature of the request {path} does not verify")
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise PermissionDenied("the request's key is not an ECDSA P-256 key")
    return csr, public


def _extensions(
    csr: x509.CertificateSigningRequest,
) -> dict[x509.ObjectIdentifier, x509.Extension[x509.ExtensionType]]:
    try:
        return {ext.oid: ext for ext in csr.extensions}
    except (ValueError, x509.DuplicateExtension):
        raise InvalidInput("the request's extensions are malformed") from None


def _asks_for_ca(
    extensions: dict[x509.ObjectIdentifier, x509.Extension[x509.ExtensionType]],
) -> bool:
    ext = extensions.get(x509.BasicConstraints.oid)
    return ext is not None and isinstance(ext.value, x509.BasicConstraints) and ext.value.ca


def sign_ca_request(
    root_dir: Path,
    csr: Path,
    scope: str,
    out: Path,
    days: int = 1825,
    passphrase: bytes | None = None,
    now: datetime | None = None,
) -> Path:
    """The root in ``root_dir`` (its key decrypted with ``passphrase``) signs the CA
    request ``csr`` of ``scope``, the scope the root operator expects it from. Writes
    ``out/<scope>.pem`` (never over an existing one) and a copy of root.pem; returns the
    certificate's path."""
    name = _ca_name(scope)
    if name == ROOT:
        raise InvalidInput("the root signs CA requests of a member state or 'eu'")
    request, public = _read_request(csr)
    extensions = _extensions(request)
    if not _asks_for_ca(extensions):
        raise PermissionDenied("the request is not a CA request: the root signs only CAs")
    expected = ca_subject(name)
    if request.subject != expected:
        asked = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        what = str(asked[0].value) if asked else request.subject.rfc4514_string()
        raise PermissionDenied(f"the request asks for {what!r}, not the {name.upper()} CA")
    unexpected = set(extensions) - {x509.BasicConstraints.oid}
    if unexpected:
        raise PermissionDenied("a CA request carries no extension but its basic constraints")
    root = _load_ca(root_dir, ROOT, passphrase)
    if (Path(out) / f"{name}.pem").exists():
        raise InvalidInput(
            f"{Path(out) / (name + '.pem')} already exists; refusing to overwrite it"
        )
    cert = intermediate_certificate(root, name, public, days, now)
    return write_intermediate(root, name, cert, out)


def _bound_key(
    request: x509.CertificateSigningRequest,
    public: ec.EllipticCurvePublicKey,
    extensions: dict[x509.ObjectIdentifier, x509.Extension[x509.ExtensionType]],
) -> bytes:
    """The Ed25519 signing key the request binds, after checking its proof of possession."""
    ext = extensions.get(SIGNING_KEY_OID)
    if ext is None or ext.critical or not isinstance(ext.value, x509.UnrecognizedExtension):
        raise PermissionDenied("the request binds no signing key")
    raw = ext.value.value
    try:
        if len(raw) != _ED25519_KEY_SIZE:
            raise ValueError
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise PermissionDenied("the request's signing key is not an Ed25519 key") from None
    try:
        proof = bytes.fromhex(
            request.attributes.get_attribute_for_oid(POSSESSION_OID).value.decode("ascii")
        )
        key.verify(proof, _POSSESSION_PREFIX + _spki(public))
    except (x509.AttributeNotFound, ValueError, UnicodeDecodeError, InvalidSignature):
        raise PermissionDenied(
            "the request does not prove possession of the signing key it binds"
        ) from None
    return raw


def sign_leaf_request(
    ca_dir: Path,
    scope: str,
    csr: Path,
    out: Path,
    days: int = 90,
    passphrase: bytes | None = None,
    role: str | None = None,
    now: datetime | None = None,
) -> TlsFiles:
    """The CA of ``scope`` in ``ca_dir`` (its key decrypted with ``passphrase``) signs the
    leaf request ``csr``, whose name must lie in its scope (and be of ``role``, if given).
    Writes ``out/cert.pem`` (leaf then intermediate) and ``out/ca.pem`` (root); the
    returned files name ``out/key.pem``, where the holder keeps its key."""
    request, public = _read_request(csr)
    extensions = _extensions(request)
    if _asks_for_ca(extensions):
        raise PermissionDenied("the request asks for a CA certificate; a scope CA signs leaves")
    unexpected = set(extensions) - {
        x509.SubjectAlternativeName.oid,
        SIGNING_KEY_OID,
        x509.BasicConstraints.oid,
    }
    if unexpected:
        raise PermissionDenied("the request carries extensions a leaf does not have")
    san = extensions.get(x509.SubjectAlternativeName.oid)
    names = list(san.value) if san is not None and isinstance(
        san.value, x509.SubjectAlternativeName) else []  # fmt: skip
    if len(names) != 1 or not isinstance(names[0], x509.DNSName):
        raise PermissionDenied("the request must name exactly one DNS name")
    dns = names[0].value
    asked_role, asked_scope, instance = parse_dns(dns)
    ca = _load_ca(ca_dir, scope, passphrase)
    if _ca_name(asked_scope) != ca.name:
        raise PermissionDenied(f"the {ca.name.upper()} CA may not sign {dns}")
    if role is not None and asked_role != role:
        raise PermissionDenied(f"the request names a {asked_role}, not an {role}")
    # Rebuilt from its parts: the name the certificate gets is one the scheme produces.
    if dns_name(asked_role, asked_scope, instance) != dns:
        raise PermissionDenied(f"{dns} is not a name of the federation's scheme")
    bound = _bound_key(request, public, extensions)
    root_cert = _load_cert(Path(ca_dir) / "root.pem")
    cert = leaf_certificate(ca, dns, public, bound, days, now)
    files = write_leaf(ca, root_cert, cert, out)
    return files
