"""End to end over real gRPC servers on port 0: lookups, resolves and Dublin decisions."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category
from fedmatch.errors import DeadlineExceeded
from fedmatch.he.engine import PackedEngine, SearchOutput
from fedmatch.he.keys import EvaluationKeys
from fedmatch.he.params import DEFAULT_PARAM_SET
from node.config import NodeConfig
from node.service import NodeService
from node.servicer import serve_node
from node.store import RecordStore
from tests.federation import (
    DIM,
    MODEL,
    TODAY,
    Federation,
    enrol,
    federation,
    gate,
    header,
    node_audit,
    node_entry,
    security,
)

APPLICATION = TODAY.isoformat()  # 2026-11-21: AMMR, 20-month window


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("fed"), ("DE", "IT", "FR", "ES")) as f:
        yield f


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng()


def test_an_earlier_application_elsewhere_is_taken_back_before_first_entry(
    fed: Federation, rng: np.random.Generator
) -> None:
    person = unit_vectors(rng, 1, DIM)[0]
    ref_it, ref_fr = f"IT-{rng.integers(10**9)}", f"FR-{rng.integers(10**9)}"
    enrol(fed.nodes["IT"], capture(person, rng, 0.85), ref_it, Category.IRREGULAR_CROSSING,
          dt.date(2026, 2, 14), "Lampedusa")  # fmt: skip
    enrol(fed.nodes["FR"], capture(person, rng, 0.85), ref_fr, Category.APPLICANT,
          dt.date(2026, 5, 20), "Paris")  # fmt: skip
    requester = fed.requester("DE")
    report = requester.lookup(capture(person, rng, 0.85), header("DE"))

    outcomes = {n.member_state: n.outcome for n in report.nodes}
    assert outcomes == {"IT": "ok", "FR": "ok", "ES": "ok"}  # DE itself is not searched
    assert {n.member_state: n.matches for n in report.nodes} == {"IT": 1, "FR": 1, "ES": 0}
    assert {s for s, _ in report.matches} == {"IT", "FR"}

    resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
    assert resolved.complete
    # The earlier application in FR comes before the crossing into IT: take back to FR
    # (AMMR Art. 36; CJEU C-582/17 H. and R.).
    assert (resolved.responsible_state, resolved.rule, resolved.procedure, resolved.regime) == (
        "FR", "earlier_application", "take_back", "ammr",
    )  # fmt: skip
    assert [e["reference"] for e in resolved.evidence] == [ref_fr]
    assert resolved.evidence[0]["event_place"] == "Paris"
    assert sorted(h["reference"] for h in resolved.hits) == sorted([ref_it, ref_fr])
    assert ref_fr in resolved.explanation


def test_no_hit_means_no_other_state(fed: Federation, rng: np.random.Generator) -> None:
    requester = fed.requester("DE")
    report = requester.lookup(unit_vectors(rng, 1, DIM)[0], header("DE"))
    assert report.matches == ()
    assert all(n.outcome == "ok" for n in report.nodes)
    resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
    assert resolved.complete
    assert (resolved.responsible_state, resolved.rule, resolved.procedure) == (
        None, "no_other_state", "none",
    )  # fmt: skip
    assert resolved.evidence == () and resolved.hits == ()


def test_take_back_when_crossing_is_out_of_window(
    fed: Federation, rng: np.random.Generator
) -> None:
    person = unit_vectors(rng, 1, DIM)[0]
    ref_es, ref_fr = f"ES-{rng.integers(10**9)}", f"FR-{rng.integers(10**9)}"
    # Crossed into Spain 3 years ago (outside even the AMMR's 20 months), applied in France.
    enrol(fed.nodes["ES"], capture(person, rng, 0.85), ref_es, Category.IRREGULAR_CROSSING,
          dt.date(2023, 9, 1), "Ceuta")  # fmt: skip
    enrol(fed.nodes["FR"], capture(person, rng, 0.85), ref_fr, Category.APPLICANT,
          dt.date(2024, 1, 10), "Lyon")  # fmt: skip
    requester = fed.requester("IT")
    report = requester.lookup(capture(person, rng, 0.85), header("IT"))
    assert {s for s, _ in report.matches} == {"ES", "FR"}
    resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
    assert (resolved.responsible_state, resolved.rule, resolved.procedure) == (
        "FR", "earlier_application", "take_back",
    )  # fmt: skip
    assert [e["reference"] for e in resolved.evidence] == [ref_fr]


def test_resolve_needs_the_same_requester_and_query(
    fed: Federation, rng: np.random.Generator
) -> None:
    import grpc

    report = fed.requester("DE").lookup(unit_vectors(rng, 1, DIM)[0], header("DE"))
    with pytest.raises(grpc.RpcError) as err:
        fed.requester("FR").resolve(
            type(report)(**{**report.__dict__, "header": header("FR")}),
            APPLICATION,
            fed.verdicts(report),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_node_down_is_named_and_others_intact(tmp_path: Path) -> None:
    down = node_entry(tmp_path, "PL", f"127.0.0.1:{_closed_port()}")
    with federation(tmp_path, ("DE", "IT"), records=50, node_deadline=5.0,
                    extra_nodes=(down,)) as fed:  # fmt: skip
        rng = np.random.default_rng()
        person = unit_vectors(rng, 1, DIM)[0]
        enrol(fed.nodes["IT"], capture(person, rng, 0.85), "IT-77", Category.APPLICANT,
              dt.date(2026, 1, 5))  # fmt: skip
        requester = fed.requester("DE")
        report = requester.lookup(capture(person, rng, 0.85), header("DE"))
        by_state = {n.member_state: n for n in report.nodes}
        assert by_state["PL"].outcome == "unreachable"
        # Found down when asked to witness the record, before the search was sent.
        assert by_state["PL"].matches == 0
        assert by_state["PL"].detail.startswith("witness: UNAVAILABLE")
        assert by_state["IT"].outcome == "ok" and by_state["IT"].matches == 1
        resolved = requester.resolve(report, APPLICATION, fed.verdicts(report))
        # The take-back is found, but the decision says its evidence is partial.
        assert resolved.responsible_state == "IT" and resolved.procedure == "take_back"
        assert resolved.complete is False


class SlowEngine(PackedEngine):
    """A real engine that first stalls, checking the caller's deadline like real HE work."""

    stopped_at: float | None = None

    def search(
        self, keys: EvaluationKeys, probe: bytes, threshold: float,
        should_stop: Callable[[], bool], exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:  # fmt: skip
        until = time.monotonic() + 30.0
        while time.monotonic() < until:
            if should_stop():
                SlowEngine.stopped_at = time.monotonic()
                raise DeadlineExceeded("search stopped: the caller's deadline passed")
            time.sleep(0.01)
        return super().search(keys, probe, threshold, should_stop, exclude)


def test_slow_node_times_out_and_stops_its_work(tmp_path: Path) -> None:
    db = tmp_path / "GR.sqlite"
    store = RecordStore(db, "GR", DIM, MODEL)
    audit = node_audit(tmp_path, "GR")
    slow_gate = gate(tmp_path, "node-GR")
    slow = NodeService(
        NodeConfig(member_state="GR", database=db, dimension=DIM, model_id=MODEL),
        store,
        audit,
        slow_gate,
        engine=SlowEngine(DEFAULT_PARAM_SET, DIM),
    )
    server = serve_node(slow, security(tmp_path, "node-GR"), "127.0.0.1:0")
    try:
        entry = node_entry(tmp_path, "GR", server.address)
        with federation(tmp_path, ("DE", "IT"), records=50, node_deadline=1.5,
                        extra_nodes=(entry,)) as fed:  # fmt: skip
            started = time.monotonic()
            report = fed.requester("DE").lookup(
                unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE")
            )
            elapsed = time.monotonic() - started
            by_state = {n.member_state: n for n in report.nodes}
            assert by_state["GR"].outcome == "deadline_exceeded"
            assert by_state["IT"].outcome == "ok"
            # Generous bound: the node deadline is 1.5 s, the slow node would take 30 s.
            assert elapsed < 10.0
            deadline = time.monotonic() + 5.0
            while SlowEngine.stopped_at is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert SlowEngine.stopped_at is not None, "the node kept working past the deadline"
    finally:
        server.stop(0.2)
        slow.close()
        slow_gate.close()
        audit.close()
        store.close()


def test_keys_are_registered_once_and_again_after_a_node_restart(tmp_path: Path) -> None:
    with federation(tmp_path, ("DE", "IT"), records=50) as fed:
        rng = np.random.default_rng()
        person = unit_vectors(rng, 1, DIM)[0]
        enrol(fed.nodes["IT"], capture(person, rng, 0.85), "IT-RS-1", Category.APPLICANT,
              dt.date(2026, 1, 5))  # fmt: skip
        requester = fed.requester("DE")
        first = requester.lookup(capture(person, rng, 0.85), header("DE"))
        second = requester.lookup(capture(person, rng, 0.85), header("DE"))
        assert first.key_bytes_sent > 30_000_000 and second.key_bytes_sent == 0
        assert requester.key_registrations == 1
        assert len(first.matches) == len(second.matches) == 1

        # The node restarts on the same register and audit directories: it has lost the key
        # epoch (it still remembers the coordinator checkpoints it witnessed), the lookup
        # sees it refuse the key id, registers again and succeeds, all in one call.
        old = fed.nodes["IT"]
        fed.servers["IT"].server.stop(0).wait()
        old.close()
        old.audit.close()
        old.gate.close()
        audit = node_audit(tmp_path, "IT")
        fed.stack.callback(audit.close)
        node_gate = gate(tmp_path, "node-IT")  # the same replay store on disk
        fed.stack.callback(node_gate.close)
        restarted = NodeService(old.config, old.store, audit, node_gate)
        fed.stack.callback(restarted.close)
        fed.nodes["IT"] = restarted
        port = fed.servers["IT"].port
        fed.servers["IT"] = serve_node(
            restarted, security(tmp_path, "node-IT"), f"127.0.0.1:{port}"
        )
        fed.stack.callback(fed.servers["IT"].stop, 0.2)
        third = requester.lookup(capture(person, rng, 0.85), header("DE"))
        assert requester.key_registrations == 2 and third.key_bytes_sent > 30_000_000
        assert [(n.member_state, n.outcome, n.matches) for n in third.nodes] == [("IT", "ok", 1)]


def test_key_registration_survives_a_node_that_is_down(tmp_path: Path) -> None:
    down = node_entry(tmp_path, "PL", f"127.0.0.1:{_closed_port()}")
    with federation(tmp_path, ("DE", "IT"), records=20, node_deadline=5.0,
                    extra_nodes=(down,)) as fed:  # fmt: skip
        requester = fed.requester("DE")
        requester.register_keys(header("DE"))
        report = requester.lookup(unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE"))
        outcomes = {n.member_state: n.outcome for n in report.nodes}
        assert outcomes == {"IT": "ok", "PL": "unreachable"}


def test_keys_are_registered_again_after_a_coordinator_restart(tmp_path: Path) -> None:
    with federation(tmp_path, ("DE", "IT"), records=20) as fed:
        requester = fed.requester("DE")
        requester.lookup(unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE"))
        # A coordinator that forgot every key epoch (as after a restart).
        fed.coordinator._keys = type(fed.coordinator._keys)(86400.0, per_state=16)
        report = requester.lookup(unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE"))
        assert requester.key_registrations == 2
        assert [(n.member_state, n.outcome) for n in report.nodes] == [("IT", "ok")]
