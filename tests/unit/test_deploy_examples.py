"""The example configurations in deploy/ load and describe a consistent federation."""

from __future__ import annotations

from pathlib import Path

from coordinator.config import load_coordinator_config
from node.config import load_node_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_example_configs_load_and_agree() -> None:
    node = load_node_config(EXAMPLES / "node-it.toml")
    coord = load_coordinator_config(EXAMPLES / "coordinator.toml")
    assert node.member_state == "IT"
    assert node.database == EXAMPLES / "it-register.sqlite"
    entry = coord.node("IT")
    assert entry is not None and entry.address == node.listen
    assert (coord.model_id, coord.dimension) == (node.model_id, node.dimension)
    assert sorted(n.member_state for n in coord.nodes) == ["DE", "FR", "IT"]
