"""Coordinator start-up checks (issue 19, item 7), with real ``node serve`` and ``coordinator
serve`` processes: a wrong verifier key for a node in the coordinator's config is warned
about at start, naming the node, and ``coordinator status`` is unhealthy naming it; with the
right keys it is healthy; a node stopped makes it unhealthy naming that node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fedmatch.ops.status import EXIT_UNHEALTHY
from tests.federation import DIM, MODEL, pki
from tests.integration.test_operations import (
    Party,
    _fedmatch,
    _free_port,
    _node_config,
    _start,
    _stop,
    _tls,
)


def _coordinator_config(fed: Path, nodes: dict[str, Party], keys: dict[str, str]) -> Path:
    parties = pki(fed)
    coordinator = parties["coordinator"]
    config = fed / "coordinator.toml"
    config.write_text(
        f'[coordinator]\nmodel_id = "{MODEL}"\ndimension = {DIM}\nnode_deadline_seconds = 5\n'
        "witness_interval_seconds = 1\n"
        + "".join(
            f'[[nodes]]\nmember_state = "{s}"\naddress = "{p.address}"\nkey = "{keys[s]}"\n'
            for s, p in nodes.items()
        )
        + f'[audit]\ndirectory = "audit-coordinator"\nsigning_key = "{coordinator.signing_key}"\n'
        + _tls(coordinator.tls)
        + f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n'
    )
    return config


def _status(coordinator: Party) -> tuple[int, dict[str, object]]:
    result = _fedmatch(
        "coordinator", "status", "--config", str(coordinator.config),
        "--address", coordinator.address,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


def _states(status: dict[str, object]) -> dict[str, str]:
    checks = status["node_checks"]
    assert isinstance(checks, dict)
    return {s: c["state"] for s, c in checks["nodes"].items()}


@pytest.mark.slow
def test_start_up_checks_find_a_wrong_key_and_a_node_down(tmp_path: Path) -> None:
    fed = tmp_path
    parties = pki(fed, "IT", "FR")
    nodes = {
        s: _start(fed, "node", _node_config(fed, s, 0, False), f"node-{s}") for s in ("IT", "FR")
    }
    started = list(nodes.values())
    try:
        right = {s: parties[f"node-{s}"].vkey for s in nodes}
        # FR's entry names IT's verifier key: a valid key, the wrong node's.
        wrong = {**right, "FR": right["IT"]}
        bad = _start(fed, "coordinator", _coordinator_config(fed, nodes, wrong), "coord-bad")
        started.append(bad)
        # The warning is in the log by the time the coordinator says where it listens.
        assert any("node FR: key_mismatch" in line and "WARNING" in line for line in bad.lines()), (
            bad.lines()
        )
        assert any(
            "start-up checks: 1 of 2 nodes not ok: FR key_mismatch" in line for line in bad.lines()
        )
        code, status = _status(bad)
        assert code == EXIT_UNHEALTHY and status["healthy"] is False
        assert _states(status) == {"IT": "ok", "FR": "key_mismatch"}
        problems = status["problems"]
        assert isinstance(problems, list)
        assert [p for p in problems if p.startswith("node ")] == [
            "node FR: key_mismatch: its cosignature does not verify with the verifier key of "
            "[[nodes]] key in the coordinator's config"
        ]
        assert _stop(bad) == 0

        good = _start(fed, "coordinator", _coordinator_config(fed, nodes, right), "coord-good")
        started.append(good)
        assert any(
            "start-up checks: all 2 nodes reachable, keys verified" in line for line in good.lines()
        )
        code, status = _status(good)
        assert code == 0, status
        assert status["healthy"] is True and _states(status) == {"IT": "ok", "FR": "ok"}

        # IT stops: within a few witness rounds (every second here) status names it.
        assert _stop(nodes["IT"]) == 0
        deadline = time.monotonic() + 60
        while True:
            code, status = _status(good)
            if _states(status)["IT"] != "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert code == EXIT_UNHEALTHY and status["healthy"] is False
        assert _states(status) == {"IT": "unreachable", "FR": "ok"}
        problems = status["problems"]
        assert isinstance(problems, list)
        assert any(p.startswith("node IT: unreachable") for p in problems), problems
        assert any("node IT: unreachable" in line and "WARNING" in line for line in good.lines())
        assert status["server"] == {
            "address": good.address,
            "transport": "mTLS",
            "health": "SERVING",
        }
    finally:
        for party in started:
            if party.process.poll() is None:
                party.process.kill()
                party.process.wait(timeout=30)
