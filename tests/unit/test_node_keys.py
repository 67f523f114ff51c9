"""NodeService key epochs and search refusals: unknown or retired keys cost no HE work."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import node.service
from fedmatch.domain import EncryptedProbe
from fedmatch.epochs import EpochTable
from fedmatch.errors import (
    AlreadyExists,
    HEError,
    InvalidInput,
    PermissionDenied,
    PreconditionFailed,
)
from fedmatch.he.engine import PackedEngine, SearchOutput
from fedmatch.he.keys import EvaluationKeys, KeyBundle, RequesterKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.seed import seed_register
from fedmatch.wire import encode_handle
from node.config import NodeConfig
from node.service import NodeService
from node.store import RecordStore
from tests.federation import DIM, MODEL, header, shared_keys

STATE = "IT"
RECORDS = 20
TODAY = dt.date(2026, 11, 21)
THRESHOLD_VERSION = NodeConfig(member_state=STATE, database=Path("unused")).threshold_version
UNREGISTERED_KEY_ID = "f" * 64


class CountingEngine(PackedEngine):
    """The real engine, counting how often a search reached it."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_PARAM_SET, DIM)
        self.searches = 0

    def search(
        self,
        keys: EvaluationKeys,
        probe: bytes,
        threshold: float,
        should_stop: Callable[[], bool],
    ) -> SearchOutput:
        self.searches += 1
        return super().search(keys, probe, threshold, should_stop)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    service: NodeService
    engine: CountingEngine
    store: RecordStore


def make_node(
    tmp_path: Path,
    records: int = RECORDS,
    key_epoch_seconds: float = 86400.0,
    max_key_epochs: int = 8,
) -> Node:
    db = tmp_path / f"{STATE}.sqlite"
    if records:
        seed_register(db, STATE, records, seed=7, dimension=DIM, model_id=MODEL, today=TODAY)
    store = RecordStore(db, STATE, DIM, MODEL)
    cfg = NodeConfig(
        member_state=STATE,
        database=db,
        dimension=DIM,
        model_id=MODEL,
        key_epoch_seconds=key_epoch_seconds,
        max_key_epochs=max_key_epochs,
    )
    engine = CountingEngine()
    return Node(NodeService(cfg, store, engine=engine), engine, store)


@pytest.fixture
def it_node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path)
    yield n
    n.store.close()


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[KeyBundle]:
    """Every bundle the node service validates with open_key_bundle."""
    calls: list[KeyBundle] = []

    def counting(bundle: KeyBundle) -> EvaluationKeys:
        calls.append(bundle)
        return open_key_bundle(bundle)

    monkeypatch.setattr(node.service, "open_key_bundle", counting)
    return calls


def probe_for(
    keys: RequesterKeys, template: npt.NDArray[np.float32] | None = None
) -> EncryptedProbe:
    if template is None:
        template = np.zeros(DIM, dtype=np.float32)
        template[0] = 1.0
    return EncryptedProbe(
        param_set=DEFAULT_PARAM_SET.name,
        ciphertext=keys.encrypt_probe(template),
        model_id=MODEL,
        dimension=DIM,
        key_id=keys.key_id,
    )


def never() -> bool:
    return False


def test_unknown_key_id_is_refused_before_any_he_work(it_node: Node) -> None:
    svc, engine = it_node.service, it_node.engine
    keys = shared_keys("DE")
    ids, templates = it_node.store.templates()
    probe = probe_for(keys, templates[3])
    hdr = header("DE")

    for p in (probe, replace(probe, key_id=UNREGISTERED_KEY_ID)):
        with pytest.raises(PreconditionFailed, match="unknown key id"):
            svc.search(hdr, p, THRESHOLD_VERSION, never)
    assert engine.searches == 0
    svc.handles.reserve(hdr.query_id, "DE")  # the refused searches left no pending query
    svc.handles.release(hdr.query_id)

    # Once the keys are registered, the same query id is an honest search that works.
    key_id, _ = svc.register_keys(header("DE"), keys.public_bundle())
    assert key_id == keys.key_id
    result = svc.search(hdr, probe, THRESHOLD_VERSION, never)
    assert engine.searches == 1
    assert result.member_state == STATE
    assert result.record_count == RECORDS
    assert len(result.blocks) == 1

    handles = [
        encode_handle(b, int(position))
        for b, block in enumerate(result.blocks)
        for position in np.flatnonzero(keys.decrypt_matches(block))
    ]
    assert len(handles) == 1  # 20 random unit vectors: only the probe's own row matches
    (hit,) = svc.hit_details(hdr, handles)
    assert hit.member_state == STATE
    assert hit.reference == it_node.store.get(int(ids[3])).reference

    # The query id is now used: a repeat is refused before the engine is reached.
    with pytest.raises(AlreadyExists):
        svc.search(hdr, probe, THRESHOLD_VERSION, never)
    assert engine.searches == 1


def test_retired_key_is_refused_without_any_engine_call(it_node: Node) -> None:
    svc, engine = it_node.service, it_node.engine
    clock = Clock()
    svc.keys = EpochTable(epoch_seconds=60.0, capacity=4, clock=clock)
    keys = shared_keys("DE")
    key_id, expires = svc.register_keys(header("DE"), keys.public_bundle())
    assert expires == clock.now + 60.0

    probe = probe_for(keys)
    clock.now += 59.0
    svc.search(header("DE"), probe, THRESHOLD_VERSION, never)
    assert engine.searches == 1

    clock.now += 1.0  # the epoch is over
    hdr = header("DE")
    with pytest.raises(PreconditionFailed, match="retired"):
        svc.search(hdr, probe, THRESHOLD_VERSION, never)
    assert engine.searches == 1
    svc.handles.reserve(hdr.query_id, "DE")  # not recorded as pending
    svc.handles.release(hdr.query_id)
    # Retired for good: the same key pair cannot be registered for a new epoch.
    with pytest.raises(PreconditionFailed, match="retired"):
        svc.register_keys(header("DE"), keys.public_bundle())
    with pytest.raises(PreconditionFailed, match="retired"):
        svc.search(header("DE"), probe, THRESHOLD_VERSION, never)
    assert engine.searches == 1
    assert key_id == keys.key_id


def test_config_sets_the_key_epoch(tmp_path: Path, opens: list[KeyBundle]) -> None:
    n = make_node(tmp_path, records=0, key_epoch_seconds=123.0, max_key_epochs=1)
    try:
        before = time.time()
        _, expires = n.service.register_keys(header("DE"), shared_keys("DE").public_bundle())
        after = time.time()
        assert before + 123.0 <= expires <= after + 123.0
        assert len(opens) == 1
        # max_key_epochs=1: a second requester's keys push the first out (unknown, not
        # retired: they may be registered again, which validates them again).
        n.service.register_keys(header("FR"), shared_keys("FR").public_bundle())
        with pytest.raises(PreconditionFailed, match="unknown key id"):
            n.service.search(header("FR"), probe_for(shared_keys("DE")), THRESHOLD_VERSION, never)
        n.service.register_keys(header("DE"), shared_keys("DE").public_bundle())
        assert len(opens) == 3
        assert n.engine.searches == 0
    finally:
        n.store.close()


def test_bundle_with_a_secret_key_is_refused_unopened(
    it_node: Node, opens: list[KeyBundle]
) -> None:
    keys = shared_keys("DE")
    with pytest.raises(HEError, match="secret key"):
        it_node.service.register_keys(header("DE"), keys.private_bundle())
    assert opens == []
    assert it_node.service.keys.check_registrable(keys.key_id) is None  # nothing registered
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        it_node.service.search(header("DE"), probe_for(keys), THRESHOLD_VERSION, never)
    assert it_node.engine.searches == 0


def test_registering_the_same_bundle_twice_validates_once(
    it_node: Node, opens: list[KeyBundle]
) -> None:
    svc = it_node.service
    bundle = shared_keys("DE").public_bundle()
    first = svc.register_keys(header("DE"), bundle)
    second = svc.register_keys(header("DE"), bundle)
    assert first == second
    assert first[0] == bundle.digest() == shared_keys("DE").key_id
    assert len(opens) == 1
    assert opens[0] is bundle


def test_search_from_the_nodes_own_state_is_permission_denied(it_node: Node) -> None:
    keys = shared_keys("DE")
    it_node.service.register_keys(header("DE"), keys.public_bundle())
    with pytest.raises(PermissionDenied):
        it_node.service.search(header(STATE), probe_for(keys), THRESHOLD_VERSION, never)
    assert it_node.engine.searches == 0


@pytest.mark.parametrize("version", ["", "2026-10-v1", THRESHOLD_VERSION + "x"])
def test_wrong_threshold_version_is_precondition_failed(it_node: Node, version: str) -> None:
    hdr = header("DE")
    with pytest.raises(PreconditionFailed, match="threshold version"):
        it_node.service.search(hdr, probe_for(shared_keys("DE")), version, never)
    assert it_node.engine.searches == 0
    it_node.service.handles.reserve(hdr.query_id, "DE")
    it_node.service.handles.release(hdr.query_id)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        pytest.param({"model_id": "other-model"}, PreconditionFailed, "model", id="model"),
        pytest.param({"dimension": DIM * 2}, InvalidInput, "dimension", id="dimension"),
        pytest.param({"param_set": "ckks-other"}, HEError, "parameter set", id="param-set"),
    ],
)
def test_probe_for_another_register_is_refused_before_any_he_work(
    it_node: Node, change: dict[str, object], error: type[Exception], message: str
) -> None:
    keys = shared_keys("DE")
    it_node.service.register_keys(header("DE"), keys.public_bundle())
    probe = replace(probe_for(keys), **change)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        it_node.service.search(header("DE"), probe, THRESHOLD_VERSION, never)
    assert it_node.engine.searches == 0
