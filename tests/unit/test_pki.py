"""Tests of the federation PKI (fedmatch.pki): names, CAs, CRLs, and mutual TLS over real
gRPC servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmatch.audit.note import NoteSigner
from fedmatch.cli.main import main
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.pki import (
    SIGNING_KEY_OID,
    Identity,
    TlsFiles,
    channel_credentials,
    channel_options,
    check_not_revoked,
    create_intermediate,
    create_root,
    dns_name,
    identity_from_certificate,
    issue,
    load_crls,
    peer_identity,
    publish_crl,
    revoke,
    server_credentials,
    verify_peer,
)
from fedmatch.pki import ca as ca_module
from fedmatch.pki.credentials import _Reloader

# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@dataclass
class Federation:
    """A root CA directory holding the IT, FR, DE and EU intermediates too."""

    ca: Path
    work: Path
    count: int = 0

    def issue(
        self,
        role: str,
        scope: str,
        instance: str = "",
        signer: NoteSigner | None = None,
        out: Path | None = None,
        days: int = 90,
        now: datetime | None = None,
    ) -> TlsFiles:
        self.count += 1
        if signer is None:
            signer = NoteSigner.generate(_signer_name(role, scope))
        out = out if out is not None else self.work / f"leaf{self.count}"
        return issue(self.ca, role, scope, instance, signer, out, days=days, now=now)


def _signer_name(role: str, scope: str) -> str:
    if role == "node":
        return f"fedmatch/node/{scope.upper()}"
    if role == "coordinator":
        return "fedmatch/coordinator"
    return f"test/{role}/{scope}"


def _new_federation(base: Path) -> Federation:
    ca = base / "ca"
    create_root(ca)
    for scope in ("IT", "FR", "DE", "EU"):
        create_intermediate(ca, scope, ca)
    return Federation(ca=ca, work=base)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return _new_federation(tmp_path_factory.mktemp("federation"))


@pytest.fixture(scope="module")
def other_fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """A second, unrelated federation (another root)."""
    return _new_federation(tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="module")
def server_files(fed: Federation) -> TlsFiles:
    return fed.issue("node", "IT")


@dataclass
class Served:
    port: int
    calls: list[str] = field(default_factory=list)


def _handler(
    files: TlsFiles, crls: list[Path], served: Served
) -> grpc.GenericRpcHandler[bytes, bytes]:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        served.calls.append("whoami")
        try:
            identity = peer_identity(context, files.root.read_bytes(), load_crls(crls))
        except PermissionDenied as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return json.dumps(
            {
                "role": identity.role,
                "scope": identity.scope,
                "member_state": identity.member_state,
                "instance": identity.instance,
                "dns": identity.dns,
                "signing_key": identity.signing_key.hex(),
                "serial": identity.serial,
            }
        ).encode()

    return grpc.method_handlers_generic_handler(
        "test.Pki", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
    )


@contextmanager
def serving(
    files: TlsFiles, crls: list[Path] | None = None, reload: bool = True
) -> Iterator[Served]:
    """A real mTLS gRPC server on 127.0.0.1, port 0, always stopped."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    served = Served(port=0)
    server.add_generic_rpc_handlers([_handler(files, crls or [], served)])
    served.port = server.add_secure_port("127.0.0.1:0", server_credentials(files, reload))
    assert served.port != 0
    server.start()
    try:
        yield served
    finally:
        server.stop(None).wait()


def _channel_options(server_dns: str) -> list[tuple[str, str | int]]:
    # A private subchannel pool: every channel makes its own connection (and handshake).
    return [*channel_options(server_dns), ("grpc.use_local_subchannel_pool", 1)]


def call(
    port: int,
    client: TlsFiles | grpc.ChannelCredentials,
    server_dns: str = "node.it.fedmatch.eu",
) -> dict[str, object]:
    creds = client if isinstance(client, grpc.ChannelCredentials) else channel_credentials(client)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, _channel_options(server_dns)) as ch:
        reply = ch.unary_unary("/test.Pki/WhoAmI", None, None)(b"", timeout=5)
    result: dict[str, object] = json.loads(reply)
    return result


def refused(
    port: int,
    client: TlsFiles | grpc.ChannelCredentials,
    server_dns: str = "node.it.fedmatch.eu",
) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        call(port, client, server_dns)
    code: grpc.StatusCode = exc.value.code()
    return code


def _chain(files: TlsFiles) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(files.chain.read_bytes())


# --------------------------------------------------------------------------------------------
# mTLS over real gRPC


def test_good_mtls_call_server_sees_identity(fed: Federation, server_files: TlsFiles) -> None:
    signer = NoteSigner.generate("desk7.operator.de.fedmatch.eu")
    client = fed.issue("operator", "DE", "desk7", signer=signer)
    with serving(server_files) as served:
        seen = call(served.port, client)
    assert seen == {
        "role": "operator",
        "scope": "DE",
        "member_state": "DE",
        "instance": "desk7",
        "dns": "desk7.operator.de.fedmatch.eu",
        "signing_key": signer.public_key_bytes().hex(),
        "serial": _chain(client)[0].serial_number,
    }
    assert served.calls == ["whoami"]


def test_eu_level_auditor_has_no_member_state(fed: Federation, server_files: TlsFiles) -> None:
    client = fed.issue("auditor", "eu", "edps")
    with serving(server_files) as served:
        seen = call(served.port, client)
    assert (seen["role"], seen["scope"], seen["member_state"]) == ("auditor", "EU", None)


def test_no_client_certificate_is_unavailable(server_files: TlsFiles) -> None:
    creds = grpc.ssl_channel_credentials(server_files.root.read_bytes())
    with serving(server_files) as served:
        assert refused(served.port, creds) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []


def test_client_from_unknown_ca_is_unavailable(
    server_files: TlsFiles, other_fed: Federation
) -> None:
    stranger = other_fed.issue("operator", "IT", "desk1")
    # The stranger even trusts our root: only its own certificate is foreign.
    shutil.copy(server_files.root, stranger.root)
    with serving(server_files) as served:
        assert refused(served.port, stranger) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []


def test_server_from_unknown_ca_is_unavailable(fed: Federation, other_fed: Federation) -> None:
    client = fed.issue("operator", "IT", "desk1")
    with serving(other_fed.issue("node", "IT")) as served:
        assert refused(served.port, client) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []


def test_expired_client_certificate_is_unavailable(fed: Federation, server_files: TlsFiles) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    client = fed.issue("operator", "IT", "old", days=1, now=past)
    with serving(server_files) as served:
        assert refused(served.port, client) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []
    with pytest.raises(PermissionDenied, match="not valid at validation time"):
        verify_peer(client.chain.read_bytes(), client.root.read_bytes(), [])


@pytest.fixture(scope="module")
def french_de_node(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for node.de.fedmatch.eu signed by the French CA, which its name
    constraint forbids. issue() refuses it, so its own check is switched off here: the
    point is what verifiers do with such a certificate."""
    rogue = tmp_path_factory.mktemp("rogue")
    shutil.copy(fed.ca / "fr.key", rogue / "de.key")
    shutil.copy(fed.ca / "fr.pem", rogue / "de.pem")
    shutil.copy(fed.ca / "root.pem", rogue / "root.pem")
    signer = NoteSigner.generate("fedmatch/node/DE")
    with pytest.raises(InvalidInput, match=re.escape("may not issue node.de.fedmatch.eu")):
        issue(rogue, "node", "DE", "", signer, rogue / "refused")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ca_module, "_check_constraints", lambda ca, dns: None)
        return issue(rogue, "node", "DE", "", signer, rogue / "leaf")


def test_french_ca_cannot_vouch_for_german_node(
    fed: Federation, server_files: TlsFiles, french_de_node: TlsFiles
) -> None:
    issuer = _chain(french_de_node)[1].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert issuer[0].value == "fedmatch FR CA"
    # As a client: the server's TLS refuses it.
    with serving(server_files) as served:
        assert refused(served.port, french_de_node) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []
    # As a server: a client dialling node.de.fedmatch.eu refuses it.
    client = fed.issue("operator", "IT", "desk1")
    with serving(french_de_node) as served:
        assert refused(served.port, client, "node.de.fedmatch.eu") == grpc.StatusCode.UNAVAILABLE
    assert served.calls == []
    with pytest.raises(PermissionDenied, match="name constraints"):
        verify_peer(french_de_node.chain.read_bytes(), french_de_node.root.read_bytes(), [])


def test_revoked_certificate_is_refused_by_the_server(
    fed: Federation, tmp_path: Path, server_files: TlsFiles
) -> None:
    client = fed.issue("operator", "IT", "lost")
    other = fed.issue("operator", "IT", "kept")
    crl = tmp_path / "it.crl"
    revoke(fed.ca, "IT", _chain(client)[0].serial_number, crl_out=crl)
    with serving(server_files, crls=[crl]) as served:
        # TLS does not know our CRLs: the handshake succeeds, the handler refuses.
        assert refused(served.port, client) == grpc.StatusCode.PERMISSION_DENIED
        assert call(served.port, other)["instance"] == "kept"
    assert served.calls == ["whoami", "whoami"]
    with pytest.raises(PermissionDenied, match="peer certificate has been revoked"):
        verify_peer(client.chain.read_bytes(), client.root.read_bytes(), load_crls([crl]))


def test_revoked_intermediate_revokes_its_leaves(fed: Federation, tmp_path: Path) -> None:
    leaf = fed.issue("verifier", "DE", "bka")
    chain, root = leaf.chain.read_bytes(), leaf.root.read_bytes()
    crl = tmp_path / "root.crl"
    publish_crl(fed.ca, "root", crl_out=crl)
    assert verify_peer(chain, root, load_crls([crl])).role == "verifier"
    intermediate = _chain(leaf)[1]
    revoke(fed.ca, "root", intermediate.serial_number, crl_out=crl)
    with pytest.raises(PermissionDenied, match="issuing CA has been revoked"):
        verify_peer(chain, root, load_crls([crl]))


def test_revoke_keeps_earlier_revocations(fed: Federation, tmp_path: Path) -> None:
    crl_path = tmp_path / "it.crl"
    revoke(fed.ca, "IT", 1111, crl_out=crl_path)
    revoke(fed.ca, "it", 2222, crl_out=crl_path)
    revoke(fed.ca, "IT", 1111, crl_out=crl_path)
    (crl,) = load_crls([crl_path])
    assert sorted(r.serial_number for r in crl) == [1111, 2222]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    with pytest.raises(ConfigError, match="not a CRL of the fr CA"):
        revoke(fed.ca, "FR", 3333, crl_out=crl_path)


def test_crl_signed_by_another_key_revokes_nothing(
    fed: Federation, other_fed: Federation, tmp_path: Path
) -> None:
    leaf = fed.issue("operator", "IT", "desk2")
    chain = _chain(leaf)
    # The other federation's IT CA has the same name as ours but another key.
    forged = tmp_path / "forged.crl"
    revoke(other_fed.ca, "IT", chain[0].serial_number, crl_out=forged)
    check_not_revoked([*chain, _root(fed)], load_crls([forged]))
    verify_peer(leaf.chain.read_bytes(), leaf.root.read_bytes(), load_crls([forged]))


def _root(fed: Federation) -> x509.Certificate:
    return x509.load_pem_x509_certificate((fed.ca / "root.pem").read_bytes())


def test_rotation_without_restart_serves_the_new_certificate(
    fed: Federation, tmp_path: Path
) -> None:
    server_dir = tmp_path / "server"
    signer = NoteSigner.generate("fedmatch/node/IT")
    server = fed.issue("node", "IT", signer=signer, out=server_dir)
    client = fed.issue("operator", "IT", "desk1")
    with serving(server, reload=True) as served:
        assert call(served.port, client, "node.it.fedmatch.eu")["role"] == "operator"
        # The server's certificate names node.it, not b.node.it: a client expecting the
        # new name refuses the old certificate.
        assert refused(served.port, client, "b.node.it.fedmatch.eu") == (
            grpc.StatusCode.UNAVAILABLE
        )
        fed.issue("node", "IT", "b", signer=signer, out=server_dir)
        assert call(served.port, client, "b.node.it.fedmatch.eu")["role"] == "operator"
        assert refused(served.port, client, "node.it.fedmatch.eu") == (grpc.StatusCode.UNAVAILABLE)


def test_rotation_to_a_new_root_without_restart(
    fed: Federation, other_fed: Federation, tmp_path: Path
) -> None:
    server_dir = tmp_path / "server"
    server = fed.issue("node", "IT", out=server_dir)
    old_client = fed.issue("operator", "IT", "desk1")
    new_client = other_fed.issue("operator", "IT", "desk1")
    with serving(server, reload=True) as served:
        assert refused(served.port, new_client) == grpc.StatusCode.UNAVAILABLE
        assert call(served.port, old_client)["role"] == "operator"
        other_fed.issue("node", "IT", out=server_dir)
        assert call(served.port, new_client)["role"] == "operator"
        assert refused(served.port, old_client) == grpc.StatusCode.UNAVAILABLE
    assert served.calls == ["whoami", "whoami"]


def test_reload_skips_half_replaced_files(fed: Federation, tmp_path: Path) -> None:
    files = fed.issue("node", "IT", out=tmp_path / "server")
    reloader = _Reloader(files)
    assert reloader() is None
    staged = fed.issue("node", "IT", out=tmp_path / "staged")
    shutil.copy(staged.key, files.key)
    assert reloader() is None
    assert reloader() is None
    shutil.copy(staged.chain, files.chain)
    assert isinstance(reloader(), grpc.ServerCertificateConfiguration)
    assert reloader() is None


def test_without_reload_the_server_keeps_its_certificate(fed: Federation, tmp_path: Path) -> None:
    server_dir = tmp_path / "server"
    server = fed.issue("node", "IT", out=server_dir)
    client = fed.issue("operator", "IT", "desk1")
    with serving(server, reload=False) as served:
        fed.issue("node", "IT", "b", out=server_dir)
        assert call(served.port, client, "node.it.fedmatch.eu")["role"] == "operator"


# --------------------------------------------------------------------------------------------
# Issuance and files


def test_issued_files_and_certificate_profile(fed: Federation) -> None:
    signer = NoteSigner.generate("fedmatch/node/IT")
    files = fed.issue("node", "IT", signer=signer, days=30)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((fed.ca / "root.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((fed.ca / "it.key").stat().st_mode) == 0o600
    leaf, intermediate = _chain(files)
    root = x509.load_pem_x509_certificate(files.root.read_bytes())
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=5)
    ext = leaf.extensions.get_extension_for_oid(SIGNING_KEY_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == signer.public_key_bytes()
    constraints = intermediate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("it.fedmatch.eu")]
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=True, path_length=0)
    )
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=True, path_length=1)
    )
    identity = identity_from_certificate(leaf)
    assert identity == Identity(
        role="node",
        scope="IT",
        dns="node.it.fedmatch.eu",
        instance="",
        signing_key=signer.public_key_bytes(),
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
    )
    assert identity.member_state == "IT"


def test_ca_files_are_never_overwritten(fed: Federation) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        create_root(fed.ca)
    with pytest.raises(ConfigError, match="already exists"):
        create_intermediate(fed.ca, "IT", fed.ca)


def test_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    create_root(tmp_path, days=10)
    create_intermediate(tmp_path, "IT", tmp_path, days=5)
    files = issue(tmp_path, "node", "IT", "", NoteSigner.generate("fedmatch/node/IT"),
                  tmp_path / "leaf", days=90)  # fmt: skip
    leaf, intermediate = _chain(files)
    assert leaf.not_valid_after_utc == intermediate.not_valid_after_utc


def test_loose_ca_key_mode_is_refused(tmp_path: Path) -> None:
    create_root(tmp_path)
    (tmp_path / "root.key").chmod(0o644)
    with pytest.raises(ConfigError, match="make it 0600"):
        create_intermediate(tmp_path, "IT", tmp_path)


def test_node_signing_key_must_be_its_audit_key(fed: Federation, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="fedmatch/node/IT"):
        issue(fed.ca, "node", "IT", "", NoteSigner.generate("fedmatch/node/FR"), tmp_path)
    with pytest.raises(InvalidInput, match="fedmatch/coordinator"):
        issue(fed.ca, "coordinator", "EU", "", NoteSigner.generate("x"), tmp_path)


def test_missing_intermediate_is_a_config_error(fed: Federation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("es.key")):
        issue(fed.ca, "node", "ES", "", NoteSigner.generate("fedmatch/node/ES"), tmp_path)


# --------------------------------------------------------------------------------------------
# Names and identity parsing


def test_dns_names() -> None:
    assert dns_name("node", "IT") == "node.it.fedmatch.eu"
    assert dns_name("coordinator", "eu") == "coordinator.eu.fedmatch.eu"
    assert dns_name("operator", "de", "desk7") == "desk7.operator.de.fedmatch.eu"
    assert dns_name("auditor", "EU", "edps") == "edps.auditor.eu.fedmatch.eu"
    # An officer's personal certificate names the officer (issue 19).
    assert dns_name("officer", "it", "maria") == "maria.officer.it.fedmatch.eu"


@pytest.mark.parametrize(
    ("role", "scope", "instance"),
    [
        ("admin", "IT", ""),
        ("node", "XX", ""),
        ("node", "GB", ""),
        ("node", "EU", ""),
        ("coordinator", "IT", ""),
        ("node", "IT", "a.b"),
        ("node", "IT", "Desk"),
        ("node", "IT", "-x"),
        ("node", "IT", "x" * 64),
        ("node", "İT", ""),
        # An officer is a person of a member state: named, never federation-level.
        ("officer", "IT", ""),
        ("officer", "EU", "maria"),
    ],
)
def test_dns_name_refuses(role: str, scope: str, instance: str) -> None:
    with pytest.raises(InvalidInput):
        dns_name(role, scope, instance)


_KEY = ec.generate_private_key(ec.SECP256R1())


def _cert(
    names: list[x509.GeneralName] | None,
    signing_key: bytes | None = None,
    critical: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if signing_key is not None:
        ext = x509.UnrecognizedExtension(SIGNING_KEY_OID, signing_key)
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(_KEY, hashes.SHA256())


@pytest.mark.parametrize(
    "name",
    [
        "node.it.fedmatch.eu",
        "coordinator.eu.fedmatch.eu",
        "desk7.operator.de.fedmatch.eu",
        "edps.auditor.eu.fedmatch.eu",
        "x-1.verifier.ch.fedmatch.eu",
        "maria.officer.it.fedmatch.eu",
    ],
)
def test_identity_from_good_names(name: str) -> None:
    identity = identity_from_certificate(_cert([x509.DNSName(name)]))
    assert identity.dns == name
    assert identity.signing_key == b""


@pytest.mark.parametrize(
    "name",
    [
        "NODE.it.fedmatch.eu",
        "node.IT.fedmatch.eu",
        "node.xx.fedmatch.eu",
        "node.gb.fedmatch.eu",
        "admin.it.fedmatch.eu",
        "a.b.node.it.fedmatch.eu",
        "it.fedmatch.eu",
        "fedmatch.eu",
        "node.it.fedmatch.com",
        "node.it.evil.eu",
        "node.it.fedmatch.eu.evil.eu",
        "*.node.it.fedmatch.eu",
        "-x.node.it.fedmatch.eu",
        "node..it.fedmatch.eu",
        "node.it.fedmatch.eu.",
        "node.eu.fedmatch.eu",
        "coordinator.it.fedmatch.eu",
        "officer.it.fedmatch.eu",
        "maria.officer.eu.fedmatch.eu",
        "",
    ],
)
def test_identity_refuses_malformed_names(name: str) -> None:
    with pytest.raises(PermissionDenied):
        identity_from_certificate(_cert([x509.DNSName(name)]))


@pytest.mark.parametrize(
    "names",
    [
        None,
        [x509.DNSName("node.it.fedmatch.eu"), x509.DNSName("node.fr.fedmatch.eu")],
        [x509.DNSName("node.it.fedmatch.eu"), x509.UniformResourceIdentifier("https://x.eu")],
        [x509.RFC822Name("node@it.fedmatch.eu")],
    ],
    ids=["no-san", "two-dns", "dns-and-uri", "email"],
)
def test_identity_refuses_other_san_shapes(names: list[x509.GeneralName] | None) -> None:
    with pytest.raises(PermissionDenied):
        identity_from_certificate(_cert(names))


@pytest.mark.parametrize(
    ("value", "critical"),
    [(b"\x01" * 31, False), (b"\x01" * 33, False), (b"", False), (b"\x01" * 32, True)],
)
def test_identity_refuses_malformed_signing_key(value: bytes, critical: bool) -> None:
    cert = _cert([x509.DNSName("node.it.fedmatch.eu")], value, critical)
    with pytest.raises(PermissionDenied, match="signing"):
        identity_from_certificate(cert)


def test_channel_options_need_a_federation_name() -> None:
    assert channel_options("node.it.fedmatch.eu") == [
        ("grpc.ssl_target_name_override", "node.it.fedmatch.eu")
    ]
    with pytest.raises(InvalidInput):
        channel_options("localhost")


def test_verify_peer_refuses_garbage(server_files: TlsFiles) -> None:
    root = server_files.root.read_bytes()
    with pytest.raises(PermissionDenied):
        verify_peer(b"not a certificate", root, [])
    with pytest.raises(PermissionDenied):
        verify_peer(b"", root, [])
    # The root itself is no client certificate.
    with pytest.raises(PermissionDenied):
        verify_peer(root, root, [])
    # A leaf whose version field says v6: cryptography raises InvalidVersion, which is no
    # ValueError (found by the RPC fuzzer as an INTERNAL answer).
    leaf = x509.load_pem_x509_certificates(server_files.chain.read_bytes())[0]
    der = leaf.public_bytes(serialization.Encoding.DER)
    version = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert der.count(version) >= 1
    bad = der.replace(version, bytes.fromhex("a003020105"), 1)
    body = base64.encodebytes(bad)
    pem = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    with pytest.raises(PermissionDenied, match="not a PEM certificate chain"):
        verify_peer(pem, root, [])


def test_verify_peer_is_thread_safe(fed: Federation) -> None:
    leaf = fed.issue("operator", "FR", "desk3")
    chain, root = leaf.chain.read_bytes(), leaf.root.read_bytes()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                verify_peer(chain, root, [])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_pki_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    dev = "--dev-unencrypted-key"
    assert main(["pki", "init", "--dir", str(ca), dev]) == 0
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "IT", dev]) == 0
    key = tmp_path / "node-it.skey"
    out = tmp_path / "tls"
    capsys.readouterr()
    argv = ["pki", "issue", "--dir", str(ca), "--role", "node", "--scope", "IT",
            "--signing-key", str(key), "--out", str(out), "--days", "7"]  # fmt: skip
    assert main(argv) == 0
    issued = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    signer = NoteSigner.load(key)
    assert signer.name == "fedmatch/node/IT"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["pki", "show", "--cert", str(out / "cert.pem")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dns"] == issued["dns"] == "node.it.fedmatch.eu"
    assert shown["role"] == "node"
    assert shown["member_state"] == "IT"
    assert shown["signing_key"] == signer.public_key_bytes().hex()
    assert shown["serial"] == issued["serial"]
    # Re-issuing with the same signing key file reuses it.
    assert main(argv) == 0
    assert NoteSigner.load(key).public_key_bytes() == signer.public_key_bytes()
    capsys.readouterr()
    assert main(["pki", "revoke", "--dir", str(ca), "--scope", "IT",
                 "--serial", shown["serial"]]) == 0  # fmt: skip
    (crl,) = load_crls([ca / "it.crl"])
    assert crl.get_revoked_certificate_by_serial_number(int(shown["serial"])) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["pki", "intermediate", "--scope", "XX", "--dev-unencrypted-key"],
        ["pki", "intermediate", "--scope", "GB", "--dev-unencrypted-key"],
        ["pki", "issue", "--role", "admin", "--scope", "IT"],
        ["pki", "issue", "--role", "node", "--scope", "EU"],
        ["pki", "issue", "--role", "node", "--scope", "FR"],
        ["pki", "revoke", "--scope", "IT", "--serial", "abc"],
        ["pki", "revoke", "--scope", "IT", "--serial", "-5"],
    ],
)
def test_cli_pki_bad_input_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    dev = "--dev-unencrypted-key"
    assert main(["pki", "init", "--dir", str(ca), dev]) == 0
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "IT", dev]) == 0
    extra = ["--signing-key", str(tmp_path / "k"), "--out", str(tmp_path / "o")]
    full = [*argv, "--dir", str(ca), *(extra if argv[1] == "issue" else [])]
    assert main(full) == 2
    assert "fedmatch:" in capsys.readouterr().err


def test_cli_show_refuses_foreign_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "foreign.pem"
    cert = _cert([x509.DNSName("www.example.com")])
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert main(["pki", "show", "--cert", str(path)]) == 2
    assert "not of the form" in capsys.readouterr().err
