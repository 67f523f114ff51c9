"""Tests of the ``fedmatch`` command (fedmatch.cli.main), the key file and template file readers."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.audit.party import PartyAudit, load_audit_config, node_origin
from fedmatch.cli.main import main
from fedmatch.cli.templates import read_templates
from fedmatch.domain import Purpose
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.he import uniform
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.keystore import protect_file
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.transport import load_security
from fedmatch.requester.keyfile import load_keys, save_keys
from fedmatch.rpc.v1 import common_pb2
from node.store import RecordStore

NODE_TOML = '[node]\nmember_state = "IT"\ndatabase = "it.sqlite"\ndimension = 128\n'
DEFAULT_MODEL = "sface-2021dec-int8bq"

# --------------------------------------------------------------------------- --help

HELP_COMMANDS = [
    [],
    ["node"],
    ["node", "serve"],
    ["node", "seed"],
    ["coordinator"],
    ["coordinator", "serve"],
    ["keys"],
    ["keys", "generate"],
    ["enroll"],
    ["lookup"],
    ["demo"],
    ["bench"],
    ["bench", "search"],
    ["audit"],
    ["audit", "keygen"],
    ["audit", "verify"],
    ["audit", "stats"],
    ["pki"],
    ["pki", "init"],
    ["pki", "intermediate"],
    ["pki", "issue"],
    ["pki", "revoke"],
    ["pki", "show"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: "-".join(c) or "top")
def test_help_exits_zero_and_prints_usage(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: " + " ".join(["fedmatch", *command]))
    assert "-h, --help" in out
    assert err == ""


LOOKUP = ["lookup", "--coordinator", "c:1", "--state", "DE", "--legal-basis", "x",
          "--case-reference", "y", "--template", "p.npy", "--config", "op.toml",
          "--application-date", "2026-11-21"]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["node"], id="no-node-action"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["node", "seed", "--count", "3"], id="seed-without-config"),
        pytest.param(["keys", "generate"], id="keys-without-out"),
        pytest.param(["audit", "keygen", "--out", "x.key"], id="audit-keygen-without-name"),
        # Who asks is logged: a lookup names the requesting unit (the operator is the
        # officer of the [officer] certificate, --operator optional).
        pytest.param([*LOOKUP, "--operator", "o"], id="lookup-without-unit"),
        # The workstation's certificate and the officer's key: every lookup is signed.
        pytest.param([*LOOKUP[:-2], "--unit", "u", "--operator", "o"], id="lookup-without-config"),
    ],
)
def test_usage_errors_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: fedmatch" in capsys.readouterr().err


# --------------------------------------------------------------------------- node seed


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def seed_config(tmp_path: Path) -> Path:
    """NODE_TOML with the [audit] table `node seed` logs what it adds to."""
    key = tmp_path / "node-it.key"
    NoteSigner.generate(node_origin("IT")).save(key)
    return write_config(
        tmp_path, NODE_TOML + f'[audit]\ndirectory = "audit-it"\nsigning_key = "{key}"\n'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(None, "does not exist", id="missing-file"),
        pytest.param("[node\n", "not valid TOML", id="invalid-toml"),
        pytest.param(NODE_TOML + "colour = 1\n", r"node\.colour", id="unknown-key"),
        pytest.param(NODE_TOML.replace("128", '"abc"'), r"node\.dimension", id="dimension-not-int"),
        pytest.param(NODE_TOML.replace('"IT"', '"XX"'), r"node\.member_state", id="bad-state"),
        pytest.param(NODE_TOML.replace("128", "0"), r"node\.dimension", id="dimension-zero"),
    ],
)
def test_node_seed_with_bad_config_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str
) -> None:
    path = tmp_path / "node.toml" if text is None else write_config(tmp_path, text)
    code = main(["node", "seed", "--config", str(path), "--count", "3"])
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("fedmatch: configuration error:")
    assert re.search(message, err)
    assert not (tmp_path / "it.sqlite").exists()


@pytest.mark.parametrize("count", [0, 1, 7])
def test_node_seed_adds_the_requested_records(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> None:
    config = seed_config(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # the database is relative to the config, not the cwd
    assert main(["node", "seed", "--config", str(config), "--count", str(count)]) == 0
    assert f"added {count} synthetic records" in capsys.readouterr().out
    store = RecordStore(tmp_path / "it.sqlite", "IT", 128, DEFAULT_MODEL)
    try:
        assert store.count() == count
        _, matrix = store.templates()
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    finally:
        store.close()


def test_node_seed_into_register_of_another_dimension_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    RecordStore(tmp_path / "it.sqlite", "IT", 64, DEFAULT_MODEL).close()
    config = seed_config(tmp_path)
    assert main(["node", "seed", "--config", str(config), "--count", "2"]) == 2
    assert "dimension" in capsys.readouterr().err


# --------------------------------------------------------------------------- keys generate


def test_keys_generate_writes_a_private_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "requester.key"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    keys = load_keys(out)
    public = keys.public_bundle()
    assert public.secret_key == b""
    assert keys.private_bundle().secret_key != b""
    public_bytes = common_pb2.HEKeyBundle(
        he_param_set=public.param_set,
        parms=public.parms,
        public_key=public.public_key,
        galois_keys=public.galois_keys,
    ).SerializeToString()
    data = out.read_bytes()
    assert data != public_bytes
    assert len(data) > len(public_bytes)

    # The secret key reads back as written, and a second load decrypts what the first encrypts.
    stored = common_pb2.HEKeyBundle()
    stored.ParseFromString(data)
    assert stored.secret_key == keys.private_bundle().secret_key
    probe = np.zeros(128)
    probe[0] = 1.0
    sent, _ = uniform.open_probe_bytes(keys.params, keys.encrypt_probe(probe))
    scores = load_keys(out).decrypt_values(sent)[:4].real
    assert np.allclose(scores, [1.0, 0.0, 0.0, 0.0], atol=1e-4)
    # Saving the loaded keys again writes the same secret key.
    again = tmp_path / "again.key"
    save_keys(keys, again)
    assert load_keys(again).private_bundle().secret_key == stored.secret_key


@pytest.mark.parametrize("data", [b"", b"\xff\xfe not a protobuf"], ids=["empty", "garbage"])
def test_load_keys_refuses_bad_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    with pytest.raises(InvalidInput):
        load_keys(path)


def test_load_keys_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        load_keys(tmp_path / "missing.key")


# --------------------------------------------------------------------------- template files


def test_read_templates_npy_vector(tmp_path: Path) -> None:
    path = tmp_path / "probe.npy"
    vector = np.linspace(-1, 1, 128, dtype=np.float64)
    np.save(path, vector)
    got = read_templates(path)
    assert got.dtype == np.float32 and got.shape == (1, 128)
    assert np.array_equal(got[0], vector.astype(np.float32))


def test_read_templates_npy_matrix(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npy"
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(path, matrix)
    got = read_templates(path)
    assert got.dtype == np.float32 and got.shape == (3, 4)
    assert np.array_equal(got, matrix)


@pytest.mark.parametrize(
    ("payload", "shape"),
    [
        pytest.param([0.5, -0.25, 1], (1, 3), id="vector"),
        pytest.param([[1, 2], [3, 4], [5, 6]], (3, 2), id="matrix"),
        pytest.param([[0.125]], (1, 1), id="one-by-one"),
    ],
)
def test_read_templates_json(tmp_path: Path, payload: object, shape: tuple[int, int]) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(payload))
    got = read_templates(path)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got, np.asarray(payload, dtype=np.float32).reshape(shape))


def _full_npy(tmp_path: Path) -> bytes:
    np.save(tmp_path / "full.npy", np.ones((3, 4), dtype=np.float32))
    return (tmp_path / "full.npy").read_bytes()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("t.csv", "1,2,3", id="csv-suffix"),
        pytest.param("t.txt", "[1, 2]", id="txt-suffix"),
        pytest.param("t", "[1, 2]", id="no-suffix"),
        pytest.param("t.npz", "", id="npz-suffix"),
        pytest.param("t.json", "[1, 2", id="json-truncated"),
        pytest.param("t.json", "", id="json-empty"),
        pytest.param("t.json", '["a", "b"]', id="json-strings"),
        pytest.param("t.json", "[[1, 2], [3]]", id="json-ragged"),
        pytest.param("t.json", "null", id="json-null"),
        pytest.param("t.json", "[[[1]]]", id="json-3d"),
        pytest.param("t.npy", b"not a numpy file", id="npy-garbage"),
        pytest.param("t.npy", "truncated", id="npy-truncated"),
        pytest.param("t.npy", "header-only", id="npy-header-only"),
        pytest.param("t.npy", "3d", id="npy-3d"),
        pytest.param("t.npy", "object", id="npy-pickled-object"),
        pytest.param("missing.npy", None, id="missing-file"),
    ],
)
def test_read_templates_refuses(tmp_path: Path, name: str, content: str | bytes | None) -> None:
    path = tmp_path / name
    if content == "truncated":
        path.write_bytes(_full_npy(tmp_path)[:-10])
    elif content == "header-only":
        path.write_bytes(_full_npy(tmp_path)[:20])
    elif content == "3d" and name.endswith(".npy"):
        np.save(path, np.zeros((2, 2, 2), dtype=np.float32))
    elif content == "object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInput):
        read_templates(path)


# --- regressions: bugs found in review, now fixed ---


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("t.npy", b"", id="npy-empty-file"),
        pytest.param("t.json", '{"a": 1}', id="json-object"),
        pytest.param("t.npy", "strings", id="npy-strings"),
        pytest.param("t.json", "[]", id="json-empty-vector"),
        pytest.param("t.json", "[[]]", id="json-empty-row"),
    ],
)
def test_read_templates_refuses_more_corrupt_files(
    tmp_path: Path, name: str, content: str | bytes
) -> None:
    path = tmp_path / name
    if content == "strings":
        np.save(path, np.array(["a", "b"]))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InvalidInput):
        read_templates(path)


def test_keys_generate_over_existing_file_is_still_0600(tmp_path: Path) -> None:
    out = tmp_path / "requester.key"
    out.write_bytes(b"old")
    os.chmod(out, 0o644)
    assert main(["keys", "generate", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_node_seed_with_config_missing_member_state_exits_two(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[node]\ndatabase = "it.sqlite"\n')
    assert main(["node", "seed", "--config", str(config), "--count", "1"]) == 2


def test_node_seed_twice_extends_the_register(tmp_path: Path) -> None:
    config = seed_config(tmp_path)
    assert main(["node", "seed", "--config", str(config), "--count", "3", "--seed", "1"]) == 0
    assert main(["node", "seed", "--config", str(config), "--count", "3", "--seed", "2"]) == 0
    store = RecordStore(tmp_path / "it.sqlite", "IT", 128, DEFAULT_MODEL)
    try:
        assert store.count() == 6
    finally:
        store.close()


def test_key_file_loads_with_a_stable_key_id(tmp_path: Path) -> None:
    out = tmp_path / "requester.key"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    assert load_keys(out).key_id == load_keys(out).key_id


# --------------------------------------------------------------------------- audit keygen


def test_audit_keygen_writes_a_signing_key_and_prints_its_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys" / "node-it.key"
    assert main(["audit", "keygen", "--name", "fedmatch/node/IT", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    vkey = stdout.strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert str(out) in stderr and "PRIVATE" not in stdout + stderr
    signer = NoteSigner.load(out)
    assert (signer.name, signer.vkey()) == ("fedmatch/node/IT", vkey)
    assert NoteVerifier.from_vkey(vkey).name == "fedmatch/node/IT"
    # Never over an existing key: a party's key is its identity in every log.
    assert main(["audit", "keygen", "--name", "fedmatch/node/IT", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert NoteSigner.load(out).vkey() == vkey

    # The key works in an [audit] table; a key of another name is refused at start.
    config = write_config(
        tmp_path,
        NODE_TOML + '[audit]\ndirectory = "audit"\nsigning_key = "keys/node-it.key"\n'
        f'coordinator_key = "{NoteSigner.generate("fedmatch/coordinator").vkey()}"\n',
    )
    audit = PartyAudit(load_audit_config(config), node_origin("IT"))
    audit.close()
    with pytest.raises(ConfigError, match="fedmatch/node/FR"):
        PartyAudit(load_audit_config(config), node_origin("FR"))


def test_audit_keygen_refuses_a_bad_name(tmp_path: Path) -> None:
    out = tmp_path / "bad.key"
    assert main(["audit", "keygen", "--name", "has space", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("service", ["node", "coordinator"])
def test_serve_without_an_audit_table_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], service: str
) -> None:
    text = NODE_TOML if service == "node" else "[coordinator]\n"
    config = write_config(tmp_path, text)
    assert main([service, "serve", "--config", str(config)]) == 2
    assert "audit.directory is required" in capsys.readouterr().err


# --------------------------------------------------------------------------- TLS and --dev-insecure

INSECURE = "WARNING: --dev-insecure: PLAINTEXT"


def tls_table(files: TlsFiles) -> str:
    crls = ", ".join(f'"{c}"' for c in files.crls)
    return (
        f'\n[tls]\nkey = "{files.key}"\nchain = "{files.chain}"\nroot = "{files.root}"\n'
        f"crls = [{crls}]\n"
    )


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PartyFiles]:
    return provision(
        tmp_path_factory.mktemp("pki"), ["IT", "DE"],
        officers={"DE": ("maria", "luca"), "IT": ("maria",)},
    )  # fmt: skip


def node_serve_config(tmp_path: Path, parties: dict[str, PartyFiles], party: str) -> Path:
    """A complete node config for IT whose [tls] names ``party``'s certificate."""
    return write_config(
        tmp_path,
        NODE_TOML + '[audit]\ndirectory = "audit"\n'
        f'signing_key = "{parties["node-IT"].signing_key}"\n'
        f'coordinator_key = "{parties["coordinator"].vkey}"\n' + tls_table(parties[party].tls),
    )


def _argv_for(command: str, config: Path) -> list[str]:
    header = ["--state", "DE", "--legal-basis", "x", "--case-reference", "y"]
    return {
        "node": ["node", "serve", "--config", str(config)],
        "coordinator": ["coordinator", "serve", "--config", str(config)],
        "lookup": ["lookup", "--config", str(config), "--coordinator", "127.0.0.1:9", *header,
                   "--unit", "u", "--operator", "maria", "--template", str(config),
                   "--application-date", "2026-11-21"],
        "enroll": ["enroll", "--config", str(config), "--node", "127.0.0.1:9", *header,
                   "--template", str(config), "--reference", "r"],
        "audit-verify": ["audit", "verify", "--config", str(config)],
        "audit-stats": ["audit", "stats", "--config", str(config)],
    }[command]  # fmt: skip


@pytest.mark.parametrize(
    "command", ["node", "coordinator", "lookup", "enroll", "audit-verify", "audit-stats"]
)
def test_dev_insecure_warns_at_every_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # A config that stops each command early (no [tls] table...): the warning comes first.
    config = write_config(tmp_path, "[node]\n")
    assert main([*_argv_for(command, config), "--dev-insecure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(INSECURE) and "never in production" in err.splitlines()[0]
    assert main(_argv_for(command, config)) == 2
    assert INSECURE not in capsys.readouterr().err


def test_pki_commands_make_files_that_a_tls_table_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    dev = "--dev-unencrypted-key"
    assert main(["pki", "init", "--dir", str(ca), dev]) == 0
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "DE", dev]) == 0
    # A member state's CA elsewhere (--out): its own directory with a copy of the root.
    assert main(["pki", "intermediate", "--dir", str(ca), "--scope", "EU", "--out",
                 str(tmp_path / "eu-ca"), dev]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for crl in (ca / "root.crl", ca / "de.crl", tmp_path / "eu-ca" / "eu.crl"):
        assert crl.is_file() and str(crl) in out  # every CA starts with an empty CRL
    key = tmp_path / "keys" / "operator-de.key"
    assert main(["pki", "issue", "--dir", str(ca), "--role", "operator", "--scope", "DE",
                 "--instance", "desk1", "--signing-key", str(key), "--out",
                 str(tmp_path / "tls")]) == 0  # fmt: skip
    issued = json.loads(capsys.readouterr().out.splitlines()[-1])
    config = tmp_path / "operator.toml"
    config.write_text(
        '[operator]\nsigning_key = "keys/operator-de.key"\n[tls]\nkey = "tls/key.pem"\n'
        'chain = "tls/cert.pem"\nroot = "tls/ca.pem"\n'
        'crls = ["ca/root.crl", "ca/de.crl", "eu-ca/eu.crl"]\n'
    )
    security = load_security(config)
    assert security.files.key == Path(issued["key"]) == tmp_path / "tls" / "key.pem"
    identity = security.verify_chain(security.chain_pem())
    assert identity.dns == issued["dns"] == "desk1.operator.de.fedmatch.eu"
    assert identity.signing_key == NoteSigner.load(key).public_key_bytes()
    assert security.server_credentials() is not None
    assert security.channel_credentials() is not None
    # Revoking the certificate: the CRL the table names refuses it from then on.
    assert main(["pki", "revoke", "--dir", str(ca), "--scope", "DE",
                 "--serial", issued["serial"]]) == 0  # fmt: skip
    with pytest.raises(PermissionDenied, match="revoked"):
        load_security(config).verify_chain(security.chain_pem())


@pytest.mark.parametrize(
    ("party", "message"),
    [
        pytest.param("node-DE", "names node.de.fedmatch.eu, not the node of IT", id="other-state"),
        pytest.param("coordinator", "not the node of IT", id="other-role"),
    ],
)
def test_node_serve_refuses_a_certificate_that_is_not_its_own(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    parties: dict[str, PartyFiles],
    party: str,
    message: str,
) -> None:
    config = node_serve_config(tmp_path, parties, party)
    assert main(["node", "serve", "--config", str(config), "--listen", "127.0.0.1:0"]) == 2
    assert message in capsys.readouterr().err


def test_serve_without_a_tls_table_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], parties: dict[str, PartyFiles]
) -> None:
    config = node_serve_config(tmp_path, parties, "node-IT")
    config.write_text(config.read_text().split("\n[tls]")[0])
    assert main(["node", "serve", "--config", str(config)]) == 2
    assert "tls.key is required" in capsys.readouterr().err


OFFICER_PASSPHRASE = "maria's passphrase"


def operator_config(
    tmp_path: Path,
    workstation: PartyFiles,
    officer: PartyFiles | None,
    key_of: PartyFiles | None = None,
    passphrase: str = OFFICER_PASSPHRASE,
    source: str = "key_passphrase_env",
) -> Path:
    """An operator TOML: ``workstation``'s [tls] and ``officer``'s [officer] certificate,
    with the key of ``key_of`` (default: the officer's own) protected under ``passphrase``,
    named by ``source`` (an environment variable FEDMATCH_TEST_OFFICER_PASS, a file, or
    nothing)."""
    path = tmp_path / "operator.toml"
    table = ""
    if officer is not None:
        key = tmp_path / "officer.key.enc"
        key.unlink(missing_ok=True)
        protect_file((key_of or officer).signing_key, key, passphrase)
        table = f'[officer]\nchain = "{officer.tls.chain}"\nkey = "{key}"\n'
        if source == "key_passphrase_env":
            table += 'key_passphrase_env = "FEDMATCH_TEST_OFFICER_PASS"\n'
        elif source == "key_passphrase_file":
            secret = tmp_path / "officer.pass"
            secret.write_text(OFFICER_PASSPHRASE + "\n")
            secret.chmod(0o600)
            table += f'key_passphrase_file = "{secret}"\n'
    path.write_text(table + tls_table(workstation.tls))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("no-officer-table", "[officer] is required", id="no-officer"),
        pytest.param(
            "workstation-key",
            "operator.signing_key: the workstation's key signs no request",
            id="old-workstation-signing-key",
        ),
        pytest.param("other-state", "not the operator of DE", id="workstation-of-IT"),
        pytest.param("officer-of-IT", "not an officer of DE", id="officer-of-IT"),
        pytest.param("workstation-as-officer", "not an officer of DE", id="workstation-chain"),
        pytest.param("other-key", "binds another key", id="key-not-bound"),
        pytest.param("wrong-passphrase", "the passphrase does not unlock", id="wrong-passphrase"),
        pytest.param(
            "no-passphrase",
            "officer.key_passphrase_env or officer.key_passphrase_file",
            id="no-passphrase-source",
        ),
        pytest.param(
            "other-operator",
            "--operator 'luca' is not the officer whose certificate signs ('maria'",
            id="operator-mismatch",
        ),
        pytest.param("law-enforcement", "verifying authority's approval", id="law-enforcement"),
        pytest.param("unknown-key", "officer.colour: unknown key", id="unknown-key"),
    ],
)
def test_lookup_checks_the_operator_config_before_sending_anything(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    parties: dict[str, PartyFiles],
    case: str,
    message: str,
) -> None:
    """Issue 19 item 8: the officer's own certificate and protected key sign; the
    workstation's certificate (the channel) signs nothing; --operator, if given, names the
    certificate's officer. Every mistake is found before anything is sent (exit 2)."""
    monkeypatch.setenv("FEDMATCH_TEST_OFFICER_PASS", OFFICER_PASSPHRASE)
    de, maria = parties["operator-DE"], parties["officer-maria-DE"]
    config = {
        "no-officer-table": lambda: operator_config(tmp_path, de, None),
        "workstation-key": lambda: operator_config(tmp_path, de, maria),
        "other-state": lambda: operator_config(tmp_path, parties["operator-IT"], maria),
        "officer-of-IT": lambda: operator_config(tmp_path, de, parties["officer-maria-IT"]),
        "workstation-as-officer": lambda: operator_config(tmp_path, de, de),
        "other-key": lambda: operator_config(tmp_path, de, maria, parties["officer-luca-DE"]),
        "wrong-passphrase": lambda: operator_config(tmp_path, de, maria, passphrase="x" * 12),
        "no-passphrase": lambda: operator_config(tmp_path, de, maria, source=""),
        "other-operator": lambda: operator_config(tmp_path, de, maria),
        "law-enforcement": lambda: operator_config(tmp_path, de, maria),
        "unknown-key": lambda: operator_config(tmp_path, de, maria),
    }[case]()
    if case == "unknown-key":
        config.write_text(config.read_text().replace("[officer]\n", "[officer]\ncolour = 1\n"))
    if case == "workstation-key":
        config.write_text(f'[operator]\nsigning_key = "{de.signing_key}"\n' + config.read_text())
    argv = _argv_for("lookup", config)
    if case == "law-enforcement":
        argv += ["--purpose", "law_enforcement"]
    if case == "other-operator":
        argv += ["--operator", "luca"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_lookup_takes_the_operator_id_from_the_officer_certificate(
    tmp_path: Path, parties: dict[str, PartyFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --operator (or with the certificate's id), the requester asks as the
    officer of the [officer] certificate; the passphrase may come from a 0600 file."""
    from fedmatch.cli.common import load_operator, requester_from_args
    from fedmatch.cli.main import build_parser

    config = operator_config(
        tmp_path, parties["operator-DE"], parties["officer-maria-DE"],
        source="key_passphrase_file",
    )  # fmt: skip
    _, signer = load_operator(config, False, "DE", signs=True)
    assert signer is not None and signer.officer == "maria"
    argv = _argv_for("lookup", config)
    without = argv[: argv.index("--operator")] + argv[argv.index("--operator") + 2 :]
    for line in (without, argv):
        requester = requester_from_args(build_parser().parse_args(line), "DE", "u")
        requester.close()
        assert requester.operator == "maria"
        assert requester.header(Purpose.ASYLUM_DUBLIN, "x", "y").operator == "maria"


def test_enroll_needs_an_operator_config_even_with_dev_insecure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An officer signs every enrolment: --dev-insecure makes the channel plaintext and
    waives no signature."""
    np.save(tmp_path / "t.npy", np.full(8, 8**-0.5, dtype=np.float32))
    argv = _argv_for("enroll", tmp_path / "t.npy")
    argv = argv[: argv.index("--config")] + argv[argv.index("--config") + 2 :]
    argv += ["--category", "applicant", "--event-date", "2026-01-02", "--event-place", "Bari",
             "--birth-date", "1990-05-17"]  # fmt: skip
    for flags in ([], ["--dev-insecure"]):
        assert main([*argv, *flags]) == 2
        message = "--config (the operator's [tls] table and the [officer] who signs) is required"
        assert message in capsys.readouterr().err


def test_link_hit_takes_the_other_record_by_its_reference_or_its_digest() -> None:
    """Issue 17 item 9: after a resolve the officer names the other state's record as the
    resolve printed it (its reference); the digest the notices use is computed from it."""
    from fedmatch.cli.main import build_parser
    from fedmatch.domain import reference_digest

    common = ["node", "link-hit", "--node", "127.0.0.1:1", "--state", "FR", "--config", "o.toml",
              "--reference", "FR-1", "--other-state", "IT", "--query-id", "a" * 32]  # fmt: skip
    args = build_parser().parse_args([*common, "--other-reference", "IT-2026-BAR-7"])
    assert args.other_reference == "IT-2026-BAR-7" and args.other_digest is None
    assert reference_digest("IT", "IT-2026-BAR-7") != reference_digest("FR", "IT-2026-BAR-7")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--other-reference", "x", "--other-digest", "0" * 64])
    with pytest.raises(SystemExit):
        build_parser().parse_args(common)
