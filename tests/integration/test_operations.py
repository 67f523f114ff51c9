"""Operating a federation: /metrics after real RPCs, JSON logs, status, graceful shutdown.

Every party here is a real `fedmatch ... serve` process over mutual TLS, started from its
TOML file (with [metrics] and [logging] tables) as an operator would start it.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from fedmatch import __version__
from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.audit.log import LOG_FILE, scan_records
from fedmatch.audit.note import NoteSigner
from fedmatch.audit.party import node_origin
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Sex
from fedmatch.ops.metrics import FANOUT_OUTCOMES
from fedmatch.ops.status import EXIT_UNHEALTHY, verify_log_files
from fedmatch.pki.ca import TlsFiles
from fedmatch.requester import Requester
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller
from fedmatch.rpc.v1 import audit_pb2, coordinator_pb2, node_pb2, node_pb2_grpc
from tests.federation import (
    DIM,
    MODEL,
    federation,
    header,
    node_channel,
    node_entry,
    pki,
    request_signer,
    security,
    shared_keys,
)
from tests.unit.test_metrics import assert_closed_labels, scrape, value


def _methods(*modules: Any) -> set[str]:
    """Every RPC name the wire contract defines (what a grpc_method label may be)."""
    return {m.name for mod in modules for svc in mod.DESCRIPTOR.services_by_name.values()
            for m in svc.methods}  # fmt: skip


RPC_METHODS = _methods(audit_pb2, coordinator_pb2, node_pb2, health_pb2)
JSON_FIELDS = {"time", "level", "logger", "message"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tls(files: TlsFiles) -> str:
    crls = ", ".join(f'"{c}"' for c in files.crls)
    return (
        f'[tls]\nkey = "{files.key}"\nchain = "{files.chain}"\nroot = "{files.root}"\n'
        f"crls = [{crls}]\n"
    )


def _fedmatch(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmatch", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class Party:
    config: Path
    process: subprocess.Popen[bytes]
    log: Path
    address: str
    metrics_port: int

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def _node_config(fed: Path, state: str, records: int, json_table: bool, workers: int = 1) -> Path:
    parties = pki(fed, state)
    node = parties[f"node-{state}"]
    config = fed / f"node-{state.lower()}.toml"
    config.write_text(
        f'[node]\nmember_state = "{state}"\ndatabase = "{state.lower()}.sqlite"\n'
        f'dimension = {DIM}\nmodel_id = "{MODEL}"\nsearch_workers = {workers}\n'
        f'[audit]\ndirectory = "audit-{state.lower()}"\nsigning_key = "{node.signing_key}"\n'
        f'coordinator_key = "{parties["coordinator"].vkey}"\ncheckpoint_interval_seconds = 1.0\n'
        + _tls(node.tls)
        + f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n'
        + ('[logging]\nformat = "json"\n' if json_table else "")
    )
    if records:
        seeded = _fedmatch("node", "seed", "--config", str(config), "--count", str(records))
        assert seeded.returncode == 0, seeded.stderr
    return config


def _start(
    fed: Path, role: str, config: Path, name: str, flags: tuple[str, ...] = (), env: Any = None
) -> Party:
    port_file = fed / f"{name}.port"
    log_path = fed / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedmatch", *flags, role, "serve", "--config", str(config),
             "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stderr=log, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 180
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{name} did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    metrics = config.read_text().split('[metrics]\nlisten = "127.0.0.1:')[1].split('"')[0]
    address = f"127.0.0.1:{port_file.read_text().strip()}"
    return Party(config, process, log_path, address, int(metrics))


def _stop(party: Party) -> int:
    if party.process.poll() is None:
        party.process.send_signal(signal.SIGTERM)
    return party.process.wait(timeout=60)


@dataclass
class Running:
    fed: Path
    nodes: dict[str, Party]
    coordinator: Party
    stored: np.ndarray
    probe: np.ndarray
    matches: int


def _enrolment(reference: str) -> EnrolmentRecord:
    return EnrolmentRecord(
        reference=reference,
        category=Category.IRREGULAR_CROSSING,
        event_date=dt.date(2026, 5, 5),
        event_place="Lampedusa",
        capture_date=dt.date(2026, 5, 5),
        sex=Sex.MALE,
        operator_id="officer-9",
        birth_date=dt.date(1990, 1, 1),
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Nodes IT and FR and the coordinator as processes, after one enrolment at FR, one
    lookup from IT that finds it, and two refused enrolments (one by the access rules, one
    by the service)."""
    fed = tmp_path_factory.mktemp("ops")
    pki(fed, "IT", "FR")
    # Three ways to ask for JSON logs: the [logging] table, the flag, the environment.
    it = _start(fed, "node", _node_config(fed, "IT", 40, json_table=True), "node-it")
    fr = _start(
        fed,
        "node",
        _node_config(fed, "FR", 40, json_table=False),
        "node-fr",
        ("--log-format", "json"),
    )
    parties = pki(fed)
    coordinator = parties["coordinator"]
    config = fed / "coordinator.toml"
    config.write_text(
        f'[coordinator]\nmodel_id = "{MODEL}"\ndimension = {DIM}\nnode_deadline_seconds = 60\n'
        + "".join(
            f'[[nodes]]\nmember_state = "{s}"\naddress = "{p.address}"\n'
            f'key = "{parties[f"node-{s}"].vkey}"\n'
            for s, p in (("IT", it), ("FR", fr))
        )
        + f'[audit]\ndirectory = "audit-coordinator"\nsigning_key = "{coordinator.signing_key}"\n'
        + _tls(coordinator.tls)
        + f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n'
    )
    import os

    env = {**os.environ, "FEDMATCH_LOGGING_FORMAT": "json"}
    coord = _start(fed, "coordinator", config, "coordinator", env=env)
    started = [it, fr, coord]
    try:
        rng = np.random.default_rng(41)
        person = unit_vectors(rng, 1, DIM)[0]
        stored, probe = capture(person, rng, 0.9), capture(person, rng, 0.9)
        operator_fr = security(fed, "operator-FR").channel_credentials()
        officer_fr = request_signer(fed, "FR")
        with NodeEnroller(
            fr.address, MODEL, credentials=operator_fr, member_state="FR", signer=officer_fr
        ) as node:
            assert node.enroll(header("FR"), _enrolment("FR-OPS-1"), stored) == 41
        # Refused by the access rules: an operator of IT may not enrol at FR.
        operator_it = security(fed, "operator-IT").channel_credentials()
        officer_it = request_signer(fed, "IT")
        with NodeEnroller(
            fr.address, MODEL, credentials=operator_it, member_state="FR", signer=officer_it
        ) as node:
            with pytest.raises(grpc.RpcError) as err:
                node.enroll(header("IT"), _enrolment("FR-OPS-2"), stored)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Refused by the service: no header.
        channel = node_channel(fed, "FR", fr.address, party="operator-FR")
        with pytest.raises(grpc.RpcError) as err:
            node_pb2_grpc.NodeServiceStub(channel).Enroll(node_pb2.EnrollRequest(), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()

        requester = Requester(
            coord.address, "IT", shared_keys("IT"), "dublin-unit-1", "officer-1",
            request_signer(fed, "IT"), security(fed, "operator-IT").channel_credentials(),
        )  # fmt: skip
        try:
            report = requester.lookup(probe, header("IT"), timeout=120)
        finally:
            requester.close()
        yield Running(fed, {"IT": it, "FR": fr}, coord, stored, probe, len(report.matches))
    finally:
        for party in started:
            if party.process.poll() is None:
                party.process.kill()
                party.process.wait(timeout=30)


def test_metrics_count_real_rpcs_with_closed_labels_only(running: Running) -> None:
    assert running.matches == 1  # the lookup did find the enrolled person at FR
    fr = scrape(running.nodes["FR"].metrics_port)

    def handled(families: dict[str, Any], method: str, code: str) -> float:
        return value(families, "grpc_server_handled_total", grpc_method=method, grpc_code=code)

    assert handled(fr, "Enroll", "OK") == 1
    assert handled(fr, "Enroll", "PERMISSION_DENIED") == 1
    assert handled(fr, "Enroll", "INVALID_ARGUMENT") == 1
    assert handled(fr, "RegisterKeys", "OK") == 1
    assert handled(fr, "Search", "OK") == 1
    assert handled(fr, "AddCheckpoint", "OK") >= 1  # FR witnessed the coordinator's record
    refusals = {
        (labels["grpc_method"], labels["grpc_code"], labels["reason"]): v
        for name, labels, v in fr["fedmatch_rpc_refusals"]
        if name == "fedmatch_rpc_refusals_total"
    }
    assert refusals[("Enroll", "PERMISSION_DENIED", "access_rule")] == 1
    assert refusals[("Enroll", "INVALID_ARGUMENT", "InvalidInput")] == 1
    # The search's latency is in the histogram: one observation, in some finite bucket.
    assert value(fr, "grpc_server_handling_seconds_count", grpc_method="Search") == 1
    finite = [
        v
        for name, labels, v in fr["grpc_server_handling_seconds"]
        if name.endswith("_bucket") and labels["grpc_method"] == "Search" and labels["le"] != "+Inf"
    ]
    assert finite[-1] == 1 and finite[0] == 0  # not faster than 1 ms, not slower than 120 s
    # State gauges, read from the live node.
    assert value(fr, "fedmatch_register_records") == 41
    assert value(fr, "fedmatch_key_epochs_live") == 1
    assert value(fr, "fedmatch_search_workers") == 1
    assert value(fr, "fedmatch_audit_log_entries") >= 5
    assert value(fr, "fedmatch_audit_log_bytes") > 0
    assert value(fr, "fedmatch_audit_checkpoint_age_seconds") >= 0
    assert value(fr, "fedmatch_party_info", role="node", member_state="FR") == 1
    # Build, process and certificate metrics (deploy/monitoring/): the demo PKI's leaves
    # are valid 90 days.
    for scraped in (fr, scrape(running.coordinator.metrics_port)):
        assert value(scraped, "fedmatch_build_info", version=__version__) == 1
        assert 80 * 86400 < value(scraped, "fedmatch_tls_certificate_expiry_seconds") <= 90 * 86400
        assert value(scraped, "process_resident_memory_bytes") > 0
    assert_closed_labels(fr, RPC_METHODS)
    assert value(fr, "fedmatch_rpc_in_flight", grpc_method="Search") == 0

    coord = scrape(running.coordinator.metrics_port)
    assert handled(coord, "Lookup", "OK") == 1
    assert handled(coord, "RegisterKeys", "OK") == 1
    fanout = {
        (labels["grpc_method"], labels["member_state"], labels["outcome"]): v
        for name, labels, v in coord["fedmatch_fanout_calls"]
        if name == "fedmatch_fanout_calls_total"
    }
    # A lookup from IT goes to every other node: FR, answered.
    assert fanout == {("RegisterKeys", "FR", "ok"): 1, ("Lookup", "FR", "ok"): 1}
    assert value(coord, "fedmatch_fanout_node_seconds_count", member_state="FR") == 2
    assert value(coord, "fedmatch_federation_nodes") == 2
    assert_closed_labels(coord, RPC_METHODS)
    for samples in coord.values():
        for _, labels, _ in samples:
            assert labels.get("member_state", "FR") in {"IT", "FR", "EU", "other"}
            assert labels.get("outcome", "ok") in FANOUT_OUTCOMES
    # No query id, case number, operator, reference or key id anywhere in either scrape.
    for text in (str(fr), str(coord)):
        for secret in ("CASE-1", "officer", "FR-OPS", "dublin-unit", shared_keys("IT").key_id[:16]):
            assert secret not in text


def test_json_logs_parse_and_hold_no_templates_scores_or_keys(running: Running) -> None:
    parties = [*running.nodes.values(), running.coordinator]
    text = ""
    for party in parties:
        lines = party.lines()
        assert lines, party.log
        for line in lines:
            record = json.loads(line)  # every line is one JSON object
            assert JSON_FIELDS <= set(record), line
        text += "\n".join(lines) + "\n"
    messages = [json.loads(line)["message"] for line in text.splitlines()]
    # Logging happened on the paths that matter: the search and the refusals.
    assert any(m.startswith("search query=") for m in messages)
    assert any("refused: INVALID_ARGUMENT (InvalidInput)" in m for m in messages)
    stored, probe = running.stored, running.probe
    score = float(stored.astype(np.float64) @ probe.astype(np.float64))
    for v in (*probe[:8], *stored[:8], score):
        for fmt in (f"{v:.6f}", f"{v:.4f}", repr(float(v))):
            assert fmt not in text
    bundle = shared_keys("IT").public_bundle()
    assert bundle.public_key[:32].hex() not in text
    for name in ("node-FR", "node-IT", "coordinator"):
        # PRIVATE+KEY+<name>+<key id>+<base64 seed>: the seed may hold "+" itself.
        secret = pki(running.fed)[name].signing_key.read_text().strip()
        seed = secret.split("+", 4)[4]
        assert len(seed) >= 40 and secret not in text and seed not in text


def test_status_reports_health_log_and_register(running: Running) -> None:
    fr = running.nodes["FR"]
    result = _fedmatch("node", "status", "--config", str(fr.config), "--address", fr.address)
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    assert status["healthy"] is True and status["problems"] == []
    assert (status["role"], status["member_state"]) == ("node", "FR")
    assert status["server"] == {"address": fr.address, "transport": "mTLS", "health": "SERVING"}
    assert status["register"]["records"] == 41 and status["register"]["model_id"] == MODEL
    register = status["register"]
    # Every record is counted as verifiable by image or not (enrolled from a template alone).
    assert register["with_facial_image"] + register["not_verifiable"] == 41
    log = status["audit_log"]
    assert log["verifies"] is True and log["entries"] >= log["checkpoint_entries"] > 0
    assert log["bytes"] > 0 and log["checkpoint_age_seconds"] >= 0
    assert status["key_epochs"]["live"] == 1 and status["search_workers"] == 1
    assert status["metrics"] == {"address": f"127.0.0.1:{fr.metrics_port}", "reachable": True}

    coord = running.coordinator
    result = _fedmatch(
        "coordinator", "status", "--config", str(coord.config), "--address", coord.address
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    assert status["healthy"] and status["server"]["health"] == "SERVING"
    assert status["nodes"] == ["IT", "FR"] and status["audit_log"]["verifies"] is True

    # Nothing answers there: unhealthy, with the reason, and a non-zero exit.
    down = _fedmatch(
        "node", "status", "--config", str(fr.config), "--address", f"127.0.0.1:{_free_port()}",
        "--timeout", "2",
    )  # fmt: skip
    assert down.returncode == EXIT_UNHEALTHY
    report = json.loads(down.stdout)
    assert report["healthy"] is False and report["server"]["health"] == "UNAVAILABLE"
    assert report["audit_log"]["verifies"] is True  # the files are still fine


def test_status_finds_a_log_that_does_not_match_its_checkpoint(tmp_path: Path) -> None:
    """Read-only verification catches a damaged or rewritten entry, and status says so
    (status must not only say 'up')."""
    import struct
    import zlib

    from fedmatch.audit.entry import AuditEvent
    from fedmatch.audit.errors import AuditVerificationError
    from fedmatch.audit.log import AuditLog
    from fedmatch.ops.status import node_status

    config = _node_config(tmp_path, "FR", 0, json_table=False)
    directory = tmp_path / "audit-fr" / "log"
    signer = NoteSigner.load(pki(tmp_path)["node-FR"].signing_key)
    log = AuditLog(directory, signer, node_origin("FR"))
    for n in range(3):
        log.append(AuditEvent(EventKind.PARTY_STARTED, counts={"records": n}))
    log.checkpoint()
    log.close()
    assert verify_log_files(directory, signer, node_origin("FR"))["entries"] == 3
    original = (directory / LOG_FILE).read_bytes()
    (start, length), *_ = scan_records(original)[0][2:]

    damaged = bytearray(original)
    damaged[start + length - 1] ^= 1  # its CRC no longer matches: unreadable
    (directory / LOG_FILE).write_bytes(bytes(damaged))
    with pytest.raises(AuditVerificationError, match=r"2 readable entries, .* covers 3"):
        verify_log_files(directory, signer, node_origin("FR"))

    rewritten = bytearray(damaged)  # the same change with a fresh CRC: readable, but altered
    struct.pack_into(">I", rewritten, start - 4, zlib.crc32(rewritten[start : start + length]))
    (directory / LOG_FILE).write_bytes(bytes(rewritten))
    with pytest.raises(AuditVerificationError, match=r"do not match the signed checkpoint"):
        verify_log_files(directory, signer, node_origin("FR"))

    status = node_status(config, f"127.0.0.1:{_free_port()}", timeout=2).as_json()
    assert status["healthy"] is False and status["audit_log"]["verifies"] is False
    assert any(p.startswith("audit log: the log's first 3") for p in status["problems"])
    assert any(p.startswith("register ") for p in status["problems"])  # never created
    assert not (tmp_path / "fr.sqlite").exists()  # status did not create it


def test_sigterm_during_a_search_drains_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM while FR is searching: the search completes (or the coordinator gets a clean
    UNAVAILABLE), the process exits 0, the metrics listener is gone and the log verifies
    against a final checkpoint covering every entry (~6 s here: 20,000 records)."""
    pki(tmp_path, "IT", "FR")
    config = _node_config(tmp_path, "FR", 20_000, json_table=True)
    fr = _start(tmp_path, "node", config, "node-fr")
    try:
        rng = np.random.default_rng(43)
        probe = unit_vectors(rng, 1, DIM)[0]
        with federation(
            tmp_path, ("IT",), records=0, extra_nodes=(node_entry(tmp_path, "FR", fr.address),)
        ) as fed:
            requester = fed.requester("IT")
            requester.lookup(probe, header("IT"), timeout=120)  # keys registered, warm
            outcome: dict[str, Any] = {}

            def lookup() -> None:
                try:
                    outcome["report"] = requester.lookup(probe, header("IT"), timeout=120)
                except grpc.RpcError as err:
                    outcome["error"] = err.code()

            thread = threading.Thread(target=lookup)
            thread.start()
            # Signal exactly while FR's Search handler runs (its in-flight gauge says so).
            deadline = time.monotonic() + 60
            while (
                value(scrape(fr.metrics_port), "fedmatch_rpc_in_flight", grpc_method="Search") < 1
            ):
                assert thread.is_alive() and time.monotonic() < deadline, "search not seen"
            fr.process.send_signal(signal.SIGTERM)
            assert fr.process.wait(timeout=60) == 0
            thread.join(timeout=120)
            assert "error" not in outcome, outcome
            nodes = {n.member_state: n for n in outcome["report"].nodes}
            assert nodes["FR"].outcome in ("ok", "unreachable"), nodes["FR"]
    finally:
        if fr.process.poll() is None:
            fr.process.kill()
    lines = [json.loads(line) for line in fr.lines()]
    messages = [r["message"] for r in lines]
    assert any(m.startswith("signal 15: stopping") for m in messages)
    assert messages[-1] == "stopped"
    with pytest.raises(OSError):  # the metrics listener is closed
        scrape(fr.metrics_port)
    signer = NoteSigner.load(pki(tmp_path)["node-FR"].signing_key)
    checked = verify_log_files(tmp_path / "audit-fr" / "log", signer, node_origin("FR"))
    # The final checkpoint covers every entry, including the answered search if it was.
    assert checked["checkpoint_entries"] == checked["entries"]
    assert checked["unreadable_tail_bytes"] == 0
    if nodes["FR"].outcome == "ok":  # drained: the search answered is on the record
        data = (tmp_path / "audit-fr" / "log" / LOG_FILE).read_bytes()
        kinds = [SignedEntry.decode(data[a : a + n]).kind for a, n in scan_records(data)[0]]
        assert kinds.count(EventKind.SEARCH_ANSWERED) == 2  # the warm-up and this one
