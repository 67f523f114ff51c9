"""Tests of the CSR path of the federation PKI (issue 19 item 11): a member state generates
its CA key (encrypted) and a request, the root signs it, the state's CA signs its parties'
requests, and the resulting chains verify with the federation's own verification."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmatch.audit.note import NoteSigner
from fedmatch.cli.main import main
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.pki import ca as ca_module
from fedmatch.pki import (
    create_root,
    identity_from_certificate,
    issue,
    load_crls,
    publish_crl,
    verify_peer,
)
from fedmatch.pki.csr import request_ca, request_leaf, sign_ca_request, sign_leaf_request
from fedmatch.pki.passphrase import read_passphrase

ROOT_PASS = b"root passphrase, kept offline"
IT_PASS = b"italian CA passphrase"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("root")
    create_root(directory, passphrase=ROOT_PASS)
    publish_crl(directory, "root", passphrase=ROOT_PASS)
    return directory


@pytest.fixture(scope="module")
def italy(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Italy's CA directory, made by the CSR path: IT key and request, signed by the root."""
    directory = tmp_path_factory.mktemp("it-ca")
    _, csr = request_ca(directory, "IT", IT_PASS)
    sign_ca_request(root, csr, "IT", directory, passphrase=ROOT_PASS)
    publish_crl(directory, "IT", passphrase=IT_PASS)
    return directory


def _extensions(cert: x509.Certificate) -> dict[str, object]:
    """A certificate's extensions, without those that name particular keys."""
    skip = {x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid}
    return {
        ext.oid.dotted_string: (ext.critical, ext.value if not isinstance(
            ext.value, x509.UnrecognizedExtension) else len(ext.value.value))
        for ext in cert.extensions if ext.oid not in skip
    }  # fmt: skip


def test_csr_flow_state_ca_then_node_verifies(root: Path, italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("fedmatch/node/IT")
    holder = tmp_path / "node-it"
    key, csr = request_leaf(holder, "node", "IT", "", signer, passphrase=None)
    files = sign_leaf_request(italy, "IT", csr, holder, passphrase=IT_PASS)
    assert files.key == key and files.chain.exists() and files.root.exists()
    crls = load_crls([root / "root.crl", italy / "it.crl"])
    identity = verify_peer(files.chain.read_bytes(), (root / "root.pem").read_bytes(), crls)
    assert (identity.role, identity.scope, identity.dns) == ("node", "IT", "node.it.fedmatch.eu")
    assert identity.signing_key == signer.public_key_bytes()
    # The TLS key the holder generated is the certificate's.
    leaf, intermediate = x509.load_pem_x509_certificates(files.chain.read_bytes())
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key() == leaf.public_key()
    # Extensions exactly as provisioning sets them (compare with a directly issued pair).
    direct_root = tmp_path / "direct"
    create_root(direct_root)
    ca_module.create_intermediate(direct_root, "IT", direct_root)
    direct = issue(direct_root, "node", "IT", "", signer, tmp_path / "direct-node")
    direct_leaf, direct_ca = x509.load_pem_x509_certificates(direct.chain.read_bytes())
    assert _extensions(leaf) == _extensions(direct_leaf)
    assert _extensions(intermediate) == _extensions(direct_ca)
    assert intermediate.subject == direct_ca.subject and leaf.subject == direct_leaf.subject


def test_csr_flow_operator_with_instance(root: Path, italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("desk3.operator.it.fedmatch.eu")
    _, csr = request_leaf(tmp_path, "operator", "IT", "desk3", signer, passphrase=None)
    files = sign_leaf_request(italy, "IT", csr, tmp_path, passphrase=IT_PASS, role="operator")
    identity = verify_peer(files.chain.read_bytes(), (root / "root.pem").read_bytes(), [])
    assert identity.dns == "desk3.operator.it.fedmatch.eu"


def test_root_refuses_a_request_for_another_states_ca(root: Path, tmp_path: Path) -> None:
    _, csr = request_ca(tmp_path, "FR", IT_PASS)
    with pytest.raises(PermissionDenied, match="FR"):
        sign_ca_request(root, csr, "IT", tmp_path / "out", passphrase=ROOT_PASS)
    assert not (tmp_path / "out" / "it.pem").exists()


def test_state_ca_refuses_a_leaf_of_another_state(italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("fedmatch/node/FR")
    _, csr = request_leaf(tmp_path, "node", "FR", "", signer, passphrase=None)
    with pytest.raises(PermissionDenied, match=r"node\.fr\.fedmatch\.eu"):
        sign_leaf_request(italy, "IT", csr, tmp_path, passphrase=IT_PASS)


def test_state_ca_refuses_the_coordinator_role(italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("fedmatch/coordinator")
    _, csr = request_leaf(tmp_path, "coordinator", "EU", "", signer, passphrase=None)
    with pytest.raises(PermissionDenied):
        sign_leaf_request(italy, "IT", csr, tmp_path, passphrase=IT_PASS)


def test_state_ca_refuses_a_role_other_than_expected(italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("court.verifier.it.fedmatch.eu")
    _, csr = request_leaf(tmp_path, "verifier", "IT", "court", signer, passphrase=None)
    with pytest.raises(PermissionDenied, match="operator"):
        sign_leaf_request(italy, "IT", csr, tmp_path, passphrase=IT_PASS, role="operator")


def test_state_ca_refuses_a_ca_request(italy: Path, tmp_path: Path) -> None:
    """A state-CA request (a CA role) presented to a state CA is not a leaf."""
    _, csr = request_ca(tmp_path, "IT", IT_PASS)
    with pytest.raises(PermissionDenied, match="CA"):
        sign_leaf_request(italy, "IT", csr, tmp_path / "out", passphrase=IT_PASS)


def _crafted_csr(path: Path, dns: str, ca: bool) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    csr = builder.sign(key, hashes.SHA256())
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def test_state_ca_refuses_a_leaf_asking_to_be_a_ca(italy: Path, tmp_path: Path) -> None:
    csr = _crafted_csr(tmp_path / "ca.csr", "node.it.fedmatch.eu", ca=True)
    with pytest.raises(PermissionDenied, match="CA"):
        sign_leaf_request(italy, "IT", csr, tmp_path, passphrase=IT_PASS)


def test_root_refuses_a_leaf_request(root: Path, tmp_path: Path) -> None:
    csr = _crafted_csr(tmp_path / "leaf.csr", "node.it.fedmatch.eu", ca=False)
    with pytest.raises(PermissionDenied):
        sign_ca_request(root, csr, "IT", tmp_path / "out", passphrase=ROOT_PASS)


def test_request_with_a_bad_signature_is_refused(italy: Path, tmp_path: Path) -> None:
    signer = NoteSigner.generate("fedmatch/node/IT")
    _, csr = request_leaf(tmp_path, "node", "IT", "", signer, passphrase=None)
    der = bytearray(x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(
        serialization.Encoding.DER))  # fmt: skip
    der[-3] ^= 0x01  # inside the ECDSA signature's last integer
    bad = tmp_path / "bad.csr"
    bad.write_bytes(x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PermissionDenied, match="signature"):
        sign_leaf_request(italy, "IT", bad, tmp_path, passphrase=IT_PASS)


def test_binding_needs_the_signing_keys_proof(italy: Path, tmp_path: Path) -> None:
    """A request binding someone else's signing key (without its proof) is refused."""
    signer = NoteSigner.generate("fedmatch/node/IT")
    _, csr = request_leaf(tmp_path, "node", "IT", "", signer, passphrase=None)
    request = x509.load_pem_x509_csr(csr.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(request.subject)
    for ext in request.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    forged = tmp_path / "forged.csr"
    forged.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PermissionDenied, match="signing key"):
        sign_leaf_request(italy, "IT", forged, tmp_path / "f", passphrase=IT_PASS)


def test_node_request_needs_the_audit_log_key_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="fedmatch/node/IT"):
        request_leaf(tmp_path, "node", "IT", "", NoteSigner.generate("x"), passphrase=None)


def test_encrypted_ca_key_cannot_be_loaded_without_passphrase(root: Path, italy: Path) -> None:
    assert b"ENCRYPTED PRIVATE KEY" in (italy / "it.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (root / "root.key").read_bytes()
    with pytest.raises(ConfigError, match="encrypted"):
        ca_module._load_ca(italy, "IT")
    with pytest.raises(ConfigError, match="passphrase"):
        ca_module._load_ca(italy, "IT", b"wrong passphrase!")
    assert ca_module._load_ca(italy, "IT", IT_PASS).name == "it"


def test_ca_request_needs_a_passphrase(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="passphrase"):
        request_ca(tmp_path, "IT", b"")
    with pytest.raises(InvalidInput, match="passphrase"):
        request_ca(tmp_path, "IT", b"short")


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FM_TEST_PASS", "from the environment")
    assert read_passphrase("FM_TEST_PASS", None) == b"from the environment"
    secret = tmp_path / "pass"
    secret.write_text("from a file, one line\n")
    secret.chmod(0o600)
    assert read_passphrase(None, secret) == b"from a file, one line"
    assert read_passphrase(None, None) is None
    with pytest.raises(InvalidInput, match="FM_TEST_UNSET"):
        read_passphrase("FM_TEST_UNSET", None)
    with pytest.raises(InvalidInput):
        read_passphrase("FM_TEST_PASS", secret)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        read_passphrase(None, secret)


def test_cli_csr_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FM_ROOT_PASS", ROOT_PASS.decode())
    monkeypatch.setenv("FM_IT_PASS", IT_PASS.decode())
    root, it, node = tmp_path / "root", tmp_path / "it", tmp_path / "node"
    assert main(["pki", "init", "--dir", str(root), "--passphrase-env", "FM_ROOT_PASS"]) == 0
    assert main(["pki", "csr", "--scope", "IT", "--out", str(it),
                 "--passphrase-env", "FM_IT_PASS"]) == 0  # fmt: skip
    assert main(["pki", "sign", "--dir", str(root), "--ca", "root", "--scope", "IT",
                 "--csr", str(it / "it.csr"), "--out", str(it),
                 "--passphrase-env", "FM_ROOT_PASS"]) == 0  # fmt: skip
    assert main(["pki", "crl", "--dir", str(it), "--ca", "IT",
                 "--passphrase-env", "FM_IT_PASS"]) == 0  # fmt: skip
    assert main(["pki", "csr", "--scope", "IT", "--role", "node", "--out", str(node),
                 "--signing-key", str(tmp_path / "node.key"),
                 "--key-unencrypted"]) == 0  # fmt: skip
    assert main(["pki", "sign", "--dir", str(it), "--ca", "IT", "--csr",
                 str(node / "request.csr"), "--out", str(node),
                 "--passphrase-env", "FM_IT_PASS"]) == 0  # fmt: skip
    crls = load_crls([root / "root.crl", it / "it.crl"])
    leaf = x509.load_pem_x509_certificates((node / "cert.pem").read_bytes())[0]
    identity = verify_peer((node / "cert.pem").read_bytes(), (root / "root.pem").read_bytes(), crls)
    assert identity == identity_from_certificate(leaf)
    assert identity.signing_key == NoteSigner.load(tmp_path / "node.key").public_key_bytes()
    # Without the passphrase the IT CA signs nothing.
    monkeypatch.delenv("FM_IT_PASS")
    assert main(["pki", "sign", "--dir", str(it), "--ca", "IT", "--csr",
                 str(node / "request.csr"), "--out", str(tmp_path / "x")]) == 2  # fmt: skip


def test_cli_takes_no_passphrase_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["pki", "csr", "--scope", "IT", "--out", str(tmp_path), "--passphrase", "secret"])


def test_deploy_readme_csr_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment README's certificate-request commands, run as written (the root made
    with an environment passphrase instead of the README's /secure file)."""
    import shlex
    import shutil

    text = (Path(__file__).parents[2] / "deploy" / "README.md").read_text()
    start = text.index("### Production: each state keeps its own keys")
    block = text[start : text.index("\nThe root signs only", start)]
    commands = [
        shlex.split(line.strip())[1:]
        for line in block.splitlines()
        if line.startswith("    fedmatch pki")
    ]
    assert [c[1] for c in commands] == ["csr", "sign", "crl", "csr", "sign"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IT_CA_PASSPHRASE", IT_PASS.decode())
    monkeypatch.setenv("NODE_TLS_PASSPHRASE", "the node's TLS key passphrase")
    secret = tmp_path / "root.pass"
    secret.write_bytes(ROOT_PASS + b"\n")
    secret.chmod(0o600)
    assert main(["pki", "init", "--dir", "root-ca", "--passphrase-file", str(secret)]) == 0
    for argv in commands:
        argv = [str(secret) if a == "/secure/root.pass" else a for a in argv]
        assert main(argv) == 0, argv
        if argv[1] == "sign" and "root" in argv:
            # Italy copies what the root sent back beside its key.
            for name in ("it.pem", "root.pem"):
                shutil.copy(tmp_path / "it-ca-signed" / name, tmp_path / "it-ca" / name)
    chain = (tmp_path / "tls" / "node-it" / "cert.pem").read_bytes()
    crls = load_crls([tmp_path / "root-ca" / "root.crl", tmp_path / "it-ca" / "it.crl"])
    identity = verify_peer(chain, (tmp_path / "root-ca" / "root.pem").read_bytes(), crls)
    assert identity.dns == "node.it.fedmatch.eu"


def test_cli_writes_a_clear_ca_key_only_behind_the_dev_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    assert main(["pki", "init", "--dir", str(ca)]) == 2
    assert "--passphrase" in capsys.readouterr().err and not (ca / "root.key").exists()
    assert main(["pki", "init", "--dir", str(ca), "--dev-unencrypted-key"]) == 0
    assert "UNENCRYPTED" in capsys.readouterr().err
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "IT"]) == 2
    assert not (ca / "it.key").exists()
    monkeypatch.setenv("FM_IT_PASS", IT_PASS.decode())
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "IT",
                 "--new-passphrase-env", "FM_IT_PASS"]) == 0  # fmt: skip
    assert b"ENCRYPTED PRIVATE KEY" in (ca / "it.key").read_bytes()
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "DE",
                 "--dev-unencrypted-key"]) == 0  # fmt: skip
    assert "UNENCRYPTED" in capsys.readouterr().err


def test_encrypted_leaf_key_serves_mutual_tls(
    root: Path, italy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A party's TLS key from `pki csr` with a passphrase stays encrypted on disk; [tls]
    key_passphrase_env (or _file) decrypts it in memory for gRPC, and a real mutual-TLS
    call goes through."""
    from concurrent import futures

    import grpc

    from fedmatch.pki import channel_options
    from fedmatch.protocol.transport import load_security

    monkeypatch.setenv("FM_NODE_KEY_PASS", "node TLS key passphrase")
    tables = {}
    for name, role, signer_name in (
        ("node", "node", "fedmatch/node/IT"),
        ("operator", "operator", "desk1.operator.it.fedmatch.eu"),
    ):
        holder = tmp_path / name
        instance = "desk1" if role == "operator" else ""
        signer = NoteSigner.generate(signer_name)
        key, csr = request_leaf(holder, role, "IT", instance, signer,
                                passphrase=b"node TLS key passphrase")  # fmt: skip
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
        sign_leaf_request(italy, "IT", csr, holder, passphrase=IT_PASS)
        config = holder / "party.toml"
        config.write_text(
            f'[tls]\nkey = "key.pem"\nchain = "cert.pem"\nroot = "ca.pem"\n'
            f'crls = ["{root / "root.crl"}", "{italy / "it.crl"}"]\n'
            'key_passphrase_env = "FM_NODE_KEY_PASS"\n'
        )
        tables[name] = config
    server_security = load_security(tables["node"])
    client_security = load_security(tables["operator"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"pong")
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Csr", {"Ping": handler})]
    )
    credentials = server_security.server_credentials()
    assert credentials is not None
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        channel_creds = client_security.channel_credentials()
        assert channel_creds is not None
        options = [*channel_options("node.it.fedmatch.eu"), ("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(f"127.0.0.1:{port}", channel_creds, options) as channel:
            ping = channel.unary_unary("/test.Csr/Ping", None, None)
            assert ping(b"ping", timeout=10) == b"pong"
    finally:
        server.stop(None).wait()
    # Without its passphrase the key is refused at start, naming the setting.
    monkeypatch.delenv("FM_NODE_KEY_PASS")
    with pytest.raises(InvalidInput, match="FM_NODE_KEY_PASS"):
        load_security(tables["node"]).server_credentials()
    text = tables["node"].read_text().replace('key_passphrase_env = "FM_NODE_KEY_PASS"\n', "")
    tables["node"].write_text(text)
    with pytest.raises(ConfigError, match="key_passphrase"):
        load_security(tables["node"]).server_credentials()
