"""The example configurations in deploy/ load and describe a consistent federation."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from coordinator.config import load_coordinator_config
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.audit.party import COORDINATOR_ORIGIN, load_audit_config, node_origin
from fedmatch.cli.common import load_operator
from fedmatch.cli.main import main
from fedmatch.domain import Purpose
from fedmatch.protocol.transport import load_security
from node.config import load_node_config
from node.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
README = ROOT / "deploy" / "README.md"


def test_example_configs_load_and_agree() -> None:
    node = load_node_config(EXAMPLES / "node-it.toml")
    coord = load_coordinator_config(EXAMPLES / "coordinator.toml")
    assert node.member_state == "IT"
    assert node.database == EXAMPLES / "it-register.sqlite"
    entry = coord.node("IT")
    assert entry is not None and entry.address == node.listen
    assert (coord.model_id, coord.dimension) == (node.model_id, node.dimension)
    assert sorted(n.member_state for n in coord.nodes) == ["DE", "FR", "IT"]
    # Each node's verifier key is named after the node's log origin.
    for n in coord.nodes:
        assert NoteVerifier.from_vkey(n.key).name == node_origin(n.member_state)


def test_example_audit_configs_load_and_agree() -> None:
    node = load_audit_config(EXAMPLES / "node-it.toml")
    coord = load_audit_config(EXAMPLES / "coordinator.toml")
    # Each party logs to its own directory, next to its config.
    assert node.directory.parent == coord.directory.parent == EXAMPLES
    assert node.directory != coord.directory
    # The node witnesses the coordinator: it knows the coordinator's key by its origin name.
    assert NoteVerifier.from_vkey(node.coordinator_key).name == COORDINATOR_ORIGIN
    assert coord.coordinator_key == ""
    # The same auditors may read every party's log.
    assert node.auditors == coord.auditors and len(node.auditors) >= 1


def test_example_signing_keys_are_documented_not_committed() -> None:
    """The private keys the examples reference are made with `fedmatch audit keygen`, as the
    deployment README says, under the party's own origin name, and kept out of git."""
    readme = README.read_text()
    parties = {"node-it.toml": node_origin("IT"), "coordinator.toml": COORDINATOR_ORIGIN}
    for name, origin in parties.items():
        key = load_audit_config(EXAMPLES / name).signing_key
        assert key.is_relative_to(EXAMPLES / "keys")
        out = key.relative_to(ROOT).as_posix()
        assert f"fedmatch audit keygen --name {origin} --out {out}" in readme, name
        assert f"--name {origin} --out {out}" in (EXAMPLES / name).read_text(), name
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/deploy/examples/keys/" in gitignore


def _readme_commands(*prefixes: str) -> list[list[str]]:
    """The README's indented command lines starting with ``prefixes`` (continuation lines
    joined), as argv lists for :func:`fedmatch.cli.main.main`."""
    lines, current = [], ""
    for line in README.read_text().splitlines():
        if not line.startswith("    ") and not current:
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current)
        current = ""
    return [shlex.split(c)[1:] for c in lines if c.startswith(prefixes)]


def test_example_tls_tables_name_what_the_documented_pki_commands_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run the README's `audit keygen` and `pki` commands in a copy of the repository layout:
    every [tls] table of the examples then loads, names a certificate of the right role and
    member state that the federation root verifies, binding the party's signing key."""
    copy = tmp_path / "deploy" / "examples"
    shutil.copytree(
        EXAMPLES, copy, ignore=shutil.ignore_patterns("keys", "tls", "ca", "audit-*", "*.sqlite*")
    )
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands("fedmatch audit keygen", "fedmatch pki init",
                                "fedmatch pki intermediate", "fedmatch pki issue")  # fmt: skip
    assert len(commands) == 3 + 1 + 4 + 5
    for argv in commands:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    # The officer protects their key as documented (the passphrase from a file here, not
    # asked twice at a terminal) and the workstation reads it from the environment.
    (protect,) = _readme_commands("fedmatch desk protect-key")
    secret = tmp_path / "officer.pass"
    secret.write_text("officer-17's passphrase\n")
    secret.chmod(0o600)
    assert main([*protect, "--passphrase-file", str(secret)]) == 0
    monkeypatch.setenv("FEDMATCH_OFFICER_PASSPHRASE", "officer-17's passphrase")
    _, officer = load_operator(copy / "operator-de.toml", False, "DE", signs=True)
    assert officer is not None and officer.officer == "officer-17"
    parties = {
        "node-it.toml": ("node", "IT"),
        "coordinator.toml": ("coordinator", None),
        "operator-de.toml": ("operator", "DE"),
    }
    for name, (role, state) in parties.items():
        path = copy / name
        security = load_security(path)
        # The files are made, never committed: under the ignored tls/ and ca/ directories.
        for f in (security.files.key, security.files.chain, security.files.root):
            assert f.is_relative_to(copy / "tls"), (name, f)
        assert security.files.crls and all(
            c.is_relative_to(copy / "ca") for c in security.files.crls
        )
        identity = security.verify_chain(security.chain_pem())
        assert (identity.role, identity.member_state) == (role, state), name
        if role != "operator":  # (a workstation's key signs nothing: the officer's does)
            key = load_audit_config(path).signing_key
            assert identity.signing_key == NoteSigner.load(key).public_key_bytes(), name
        assert security.server_credentials() is not None
        assert security.channel_credentials() is not None
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert {"/deploy/examples/tls/", "/deploy/examples/ca/"} <= set(gitignore)


def test_example_node_policy_and_replay_store() -> None:
    policy = load_policy(EXAMPLES / "node-it.toml")
    assert policy.version and policy.requests_per_minute >= 1 and policy.daily_quota >= 1
    assert set(policy.purposes) == {p.value for p in Purpose}
    node = load_node_config(EXAMPLES / "node-it.toml")
    coord = load_coordinator_config(EXAMPLES / "coordinator.toml")
    # Relative to the config file, beside the register and the audit directory.
    assert node.replay_path == EXAMPLES / "it-register.replay.sqlite"
    assert coord.replay_db == EXAMPLES / "coordinator.replay.sqlite"
