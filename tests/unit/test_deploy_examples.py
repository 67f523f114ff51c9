"""The example configurations in deploy/ load and describe a consistent federation."""

from __future__ import annotations

from pathlib import Path

from coordinator.config import load_coordinator_config
from fedmatch.audit.note import NoteVerifier
from fedmatch.audit.party import COORDINATOR_ORIGIN, load_audit_config, node_origin
from node.config import load_node_config

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
