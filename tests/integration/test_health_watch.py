"""`fedmatch health` (what container health checks and probes run) against real servers over
mutual TLS, and `fedmatch audit watch` (an auditor's service loop) against a real federation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmatch.audit.watch import read_status, status_path
from fedmatch.cli.main import main
from fedmatch.errors import InvalidInput
from fedmatch.ops.health import listen_target
from fedmatch.pki.ca import TlsFiles
from tests.federation import auditor_config, federation, pki, write_auditor_toml


def _tls_table(files: TlsFiles) -> str:
    crls = ", ".join(f'"{c}"' for c in files.crls)
    return (
        f'[tls]\nkey = "{files.key}"\nchain = "{files.chain}"\nroot = "{files.root}"\n'
        f"crls = [{crls}]\n"
    )


def _node_toml(tmp: Path, state: str) -> Path:
    path = tmp / f"node-{state}.toml"
    path.write_text(
        f'[node]\nmember_state = "{state}"\ndatabase = "{state}.sqlite"\n'
        'listen = "0.0.0.0:50061"\n' + _tls_table(pki(tmp)[f"node-{state}"].tls)
    )
    return path


def _coordinator_toml(tmp: Path) -> Path:
    path = tmp / "coordinator.toml"
    path.write_text(
        '[coordinator]\nlisten = "127.0.0.1:0"\n' + _tls_table(pki(tmp)["coordinator"].tls)
    )
    return path


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    value = json.loads(out[-1])
    assert isinstance(value, dict)
    return value


def test_listen_target_reaches_a_wildcard_on_loopback() -> None:
    assert listen_target("0.0.0.0:50061") == "127.0.0.1:50061"
    assert listen_target("[::]:50061") == "[::1]:50061"
    assert listen_target("node-de:50061") == "node-de:50061"
    for bad in ("127.0.0.1:0", "50061", "host:port"):
        with pytest.raises(InvalidInput):
            listen_target(bad)


def test_health_of_a_node_and_the_coordinator_over_mtls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with federation(tmp_path, states=("DE", "IT"), records=0) as fed:
        node = _node_toml(tmp_path, "DE")
        address = fed.servers["DE"].address
        assert main(["health", "--config", str(node), "--address", address]) == 0
        reply = _last_json(capsys)
        assert reply == {
            "healthy": True, "party": "node", "address": address,
            "server_name": "node.de.fedmatch.eu", "status": "SERVING",
        }  # fmt: skip
        # The coordinator asks with its own certificate, as its container's check does.
        coordinator = _coordinator_toml(tmp_path)
        caddress = fed.coordinator_server.address
        assert main(["health", "--config", str(coordinator), "--address", caddress]) == 0
        assert _last_json(capsys)["server_name"] == "coordinator.eu.fedmatch.eu"
        # Another party's server is not this node: its certificate names IT, the TLS
        # handshake fails and the check reports the server unreachable (exit 4).
        it_address = fed.servers["IT"].address
        assert main(["health", "--config", str(node), "--address", it_address]) == 4
        assert "UNAVAILABLE" in capsys.readouterr().err
        # Asking IT for IT's name works: any federation member may check any party.
        argv = ["health", "--config", str(node), "--address", it_address]
        assert main([*argv, "--server-name", "node.it.fedmatch.eu"]) == 0
        capsys.readouterr()
        # A server in graceful shutdown reports NOT_SERVING before it goes away.
        assert fed.servers["DE"].health is not None
        fed.servers["DE"].health.enter_graceful_shutdown()
        assert main(["health", "--config", str(node), "--address", address]) == 1
        assert _last_json(capsys)["status"] == "NOT_SERVING"
        fed.servers["DE"].stop(0)
        assert main(["health", "--config", str(node), "--address", address, "--timeout", "2"]) == 4
    # The coordinator's config listens on port 0: there is nothing fixed to ask.
    assert main(["health", "--config", str(coordinator)]) == 2
    assert "no fixed port" in capsys.readouterr().err


def test_audit_watch_runs_records_status_and_reports_health(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with federation(tmp_path, states=("DE", "IT"), records=0) as fed:
        cfg = auditor_config(tmp_path, fed, state_dir=tmp_path / "auditor-state")
        toml = write_auditor_toml(cfg, tmp_path / "auditor.toml")
        # Before the loop ever ran, the auditor is not healthy.
        assert main(["health", "--config", str(toml)]) == 1
        assert _last_json(capsys)["status"] == "NO_WATCH_STATUS"
        argv = ["audit", "watch", "--config", str(toml), "--interval", "0.2", "--runs", "2"]
        assert main(argv) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        assert [x["run"] for x in lines] == [1, 2] and all(x["ok"] for x in lines)
        # The second run checked consistency with what the first one accepted.
        for origin, party in lines[1]["parties"].items():
            assert (
                party["verified"] and party["tree_size"] >= lines[0]["parties"][origin]["tree_size"]
            )
    status = read_status(status_path(cfg.state_dir))
    assert status is not None
    assert status["runs"] == 2 and status["ok"] is True and status["interval_seconds"] == 0.2
    watch_dir = status_path(cfg.state_dir).parent
    assert "RESULT: all logs verified" in (watch_dir / "last-report.txt").read_text()
    assert json.loads((watch_dir / "last-summary.json").read_text())["ok"] is True
    assert not list(watch_dir.glob("failed-*"))
    assert main(["health", "--config", str(toml)]) == 0
    healthy = _last_json(capsys)
    assert healthy["status"] == "WATCHING" and healthy["runs"] == 2 and healthy["last_ok"]
    # A loop that stopped completing runs goes stale.
    assert main(["health", "--config", str(toml), "--max-age", "0"]) == 1
    assert _last_json(capsys)["status"] == "STALE"


def test_audit_watch_keeps_every_failed_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With its parties gone, each run fails (unreachable), is reported, and is kept."""
    with federation(tmp_path, states=("DE", "IT"), records=0) as fed:
        cfg = auditor_config(tmp_path, fed, state_dir=tmp_path / "auditor-state")
        toml = write_auditor_toml(cfg, tmp_path / "auditor.toml")
    argv = ["audit", "watch", "--config", str(toml), "--interval", "0.2", "--runs", "2"]
    assert main(argv) == 6
    out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["ok"] for x in out] == [False, False]
    failed = sorted(status_path(cfg.state_dir).parent.glob("failed-*.txt"))
    assert len(failed) == 2 and all("unreachable" in f.read_text() for f in failed)
    assert main(["health", "--config", str(toml)]) == 0
    assert _last_json(capsys)["last_ok"] is False
