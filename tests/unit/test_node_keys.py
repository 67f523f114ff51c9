"""NodeService key epochs and search refusals: unknown or retired keys cost no HE work.

Every search and hit-details call carries the coordinator's authorization, built as the
coordinator builds it (:class:`tests.federation.CoordinatorRecord`), and the request signed
by an operator of the requesting state that the authorization names, so that each refusal
tested here is the node's own, not a missing record or signature.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import node.service
from fedmatch.audit.entry import digest_hex
from fedmatch.audit.party import PartyAudit
from fedmatch.audit.witness import Authorization
from fedmatch.demo.seed import seed_register
from fedmatch.domain import EncryptedProbe, QueryHeader
from fedmatch.errors import (
    AlreadyExists,
    HEError,
    InvalidInput,
    PermissionDenied,
    PreconditionFailed,
    ResourceLimit,
)
from fedmatch.he.engine import PackedEngine, SearchOutput
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.protocol.epochs import EpochTable
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.opening import ProbeOpening, seal_opening
from fedmatch.protocol.statement import SignedRequest
from fedmatch.protocol.verification import Evidence, HitKey
from fedmatch.protocol.wire import encode_handle
from node.config import NodeConfig
from node.service import NodeService
from node.store import RecordStore
from tests.federation import (
    DIM,
    MODEL,
    CoordinatorRecord,
    confirmations,
    gate,
    header,
    hit_verified,
    node_audit,
    packets_authorized,
    request_signer,
    search_authorized,
    shared_keys,
    signed_lookup,
    signed_packets,
    signed_resolve,
    workstation_signer,
)

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
        exclude: npt.NDArray[np.bool_] | None = None,
    ) -> SearchOutput:
        self.searches += 1
        return super().search(keys, probe, threshold, should_stop, exclude)


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
    audit: PartyAudit
    gate: Gate
    coordinator: CoordinatorRecord
    tmp: Path

    def sign(self, hdr: QueryHeader, probe: EncryptedProbe) -> SignedRequest:
        """The lookup as an operator of the requesting state signs it (a fresh nonce)."""
        return signed_lookup(self.tmp, hdr, probe.ciphertext)

    def authorize(
        self, hdr: QueryHeader, probe: EncryptedProbe, signed: SignedRequest
    ) -> Authorization:
        """The coordinator's search_authorized entry for this signed search, witnessed by
        the node."""
        event = search_authorized(hdr, probe.ciphertext, probe.key_id, [STATE], signed=signed)
        return self.coordinator.authorize(self.service, event)

    def search(
        self, hdr: QueryHeader, probe: EncryptedProbe, version: str = THRESHOLD_VERSION
    ) -> node.service.SearchResult:
        """A newly signed search, on the coordinator's record."""
        signed = self.sign(hdr, probe)
        authorization = self.authorize(hdr, probe, signed)
        return self.service.search(hdr, probe, version, authorization, signed, never)

    def released(
        self, hdr: QueryHeader, handles: list[bytes], sealed: bytes
    ) -> Callable[[HitKey], Evidence]:
        """The verification packets of ``handles``, asked for on the coordinator's record;
        returns what a verdict on each of them binds (no probe image: a template lookup)."""
        signed = signed_packets(self.tmp, hdr)
        event = packets_authorized(hdr, STATE, handles, signed=signed)
        authorization = self.coordinator.authorize(self.service, event)
        packets = self.service.verification_packets(hdr, handles, authorization, signed, sealed, "")
        images = {HitKey(STATE, p.handle): p.image_sha256 for p in packets}
        return lambda hit: Evidence("", images[hit])

    def verified(
        self, hdr: QueryHeader, handles: list[bytes]
    ) -> tuple[Authorization, SignedRequest]:
        """A newly signed resolve of ``handles`` and the coordinator's hit_verified entry."""
        signed = signed_resolve(self.tmp, hdr)
        event = hit_verified(hdr, STATE, handles, signed=signed)
        return self.coordinator.authorize(self.service, event), signed

    def close(self) -> None:
        self.service.close()
        self.audit.close()
        self.gate.close()
        self.coordinator.close()
        self.store.close()


def make_node(
    tmp_path: Path,
    records: int = RECORDS,
    key_epoch_seconds: float = 86400.0,
    max_key_epochs: int = 8,
    key_registration_burst: int = 10,
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
        key_registration_burst=key_registration_burst,
    )
    engine = CountingEngine()
    audit = node_audit(tmp_path, STATE)
    node_gate = gate(tmp_path, f"node-{STATE}")
    service = NodeService(cfg, store, audit, node_gate, engine=engine)
    return Node(service, engine, store, audit, node_gate, CoordinatorRecord(tmp_path), tmp_path)


@pytest.fixture
def it_node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path)
    yield n
    n.close()


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[KeyBundle]:
    """Every bundle the node service validates with open_key_bundle."""
    calls: list[KeyBundle] = []

    def counting(bundle: KeyBundle) -> EvaluationKeys:
        calls.append(bundle)
        return open_key_bundle(bundle)

    monkeypatch.setattr(node.service, "open_key_bundle", counting)
    return calls


# The opening of each probe made here, by its ciphertext: what a requester keeps for resolve.
_OPENINGS: dict[bytes, ProbeOpening] = {}


def opened(probe: EncryptedProbe, result: node.service.SearchResult, hdr: QueryHeader) -> bytes:
    """The probe's opening sealed to the node's key for this query, as a resolve sends it."""
    return seal_opening(_OPENINGS[probe.ciphertext], result.opening_key, hdr.query_id, STATE)


def probe_for(
    keys: RequesterKeys, template: npt.NDArray[np.float32] | None = None
) -> EncryptedProbe:
    if template is None:
        template = np.zeros(DIM, dtype=np.float32)
        template[0] = 1.0
    opening = ProbeOpening.new(template)
    ciphertext = keys.encrypt_probe(template, opening.commitment())
    _OPENINGS[ciphertext] = opening
    return EncryptedProbe(
        param_set=DEFAULT_PARAM_SET.name,
        ciphertext=ciphertext,
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
            it_node.search(hdr, p)
    assert engine.searches == 0
    svc.handles.reserve(hdr.query_id, "DE")  # the refused searches left no pending query
    svc.handles.release(hdr.query_id)

    # Once the keys are registered, the same query id is an honest search that works.
    key_id, _ = svc.register_keys(header("DE"), keys.public_bundle())
    assert key_id == keys.key_id
    signed = it_node.sign(hdr, probe)
    authorization = it_node.authorize(hdr, probe, signed)
    result = svc.search(hdr, probe, THRESHOLD_VERSION, authorization, signed, never)
    assert engine.searches == 1
    assert result.member_state == STATE
    # One block of records, padded with decoy blocks to the smallest bucket (4 blocks): the
    # answer does not tell the register's size.
    assert len(result.blocks) == 4

    handles = [
        encode_handle(b, int(position))
        for b, block in enumerate(result.blocks)
        for position in np.flatnonzero(keys.decrypt_matches(block))
    ]
    assert len(handles) == 1  # 20 random unit vectors: only the probe's own row matches
    sealed = opened(probe, result, hdr)
    seen = it_node.released(hdr, handles, sealed)
    verdicts = confirmations(it_node.tmp, hdr, [(STATE, h) for h in handles], evidence=seen)
    (hit,) = svc.hit_details(hdr, handles, *it_node.verified(hdr, handles), verdicts, sealed).hits
    assert hit.member_state == STATE
    assert hit.reference == it_node.store.get(int(ids[3])).reference

    # A retry of the very same call (the same signed request) is answered again, not
    # searched again.
    again = svc.search(hdr, probe, THRESHOLD_VERSION, authorization, signed, never)
    assert again == result and engine.searches == 1
    # The query id is now used: a repeat (another signed request, even with its valid
    # authorization) is refused before the engine is reached.
    with pytest.raises(AlreadyExists):
        it_node.search(hdr, probe)
    assert engine.searches == 1
    # Once the answer is no longer kept, the first signed request is a replay.
    svc._answers.clear()
    with pytest.raises(PermissionDenied, match="already used"):
        svc.search(hdr, probe, THRESHOLD_VERSION, authorization, signed, never)
    assert engine.searches == 1


def test_retired_key_is_refused_without_any_engine_call(it_node: Node) -> None:
    svc, engine = it_node.service, it_node.engine
    clock = Clock()
    svc.keys = EpochTable(epoch_seconds=60.0, per_state=4, clock=clock)
    keys = shared_keys("DE")
    key_id, expires = svc.register_keys(header("DE"), keys.public_bundle())
    assert expires == clock.now + 60.0

    probe = probe_for(keys)
    clock.now += 59.0
    it_node.search(header("DE"), probe)
    assert engine.searches == 1

    clock.now += 1.0  # the epoch is over
    hdr = header("DE")
    with pytest.raises(PreconditionFailed, match="retired"):
        it_node.search(hdr, probe)
    assert engine.searches == 1
    svc.handles.reserve(hdr.query_id, "DE")  # not recorded as pending
    svc.handles.release(hdr.query_id)
    # Retired for good: the same key pair cannot be registered for a new epoch.
    with pytest.raises(PreconditionFailed, match="retired"):
        svc.register_keys(header("DE"), keys.public_bundle())
    with pytest.raises(PreconditionFailed, match="retired"):
        it_node.search(header("DE"), probe)
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
        # max_key_epochs=1 per state: another state's keys leave DE's in place...
        n.service.register_keys(header("FR"), shared_keys("FR").public_bundle())
        n.search(header("DE"), probe_for(shared_keys("DE")))
        assert n.engine.searches == 1
        # ...DE's own next keys push its first out (unknown, not retired: they may be
        # registered again, which validates them again).
        n.service.register_keys(header("DE"), shared_keys("IT").public_bundle())
        with pytest.raises(PreconditionFailed, match="unknown key id"):
            n.search(header("DE"), probe_for(shared_keys("DE")))
        n.service.register_keys(header("DE"), shared_keys("DE").public_bundle())
        assert len(opens) == 4
        assert n.engine.searches == 1
    finally:
        n.close()


def test_nine_registrations_by_one_state_leave_another_states_epoch_usable(
    tmp_path: Path, opens: list[KeyBundle]
) -> None:
    """Issue 21, attack 2: a state registering nine valid bundles (no search needed)
    pushed another state's live epoch out of the node's shared table of eight, and that
    state's next lookup was refused. Each state now has its own live set (default
    config)."""
    n = make_node(tmp_path, records=0, max_key_epochs=NodeConfig.max_key_epochs)
    try:
        n.service.register_keys(header("FR"), shared_keys("FR").public_bundle())
        for i in range(9):
            n.service.register_keys(header("DE"), shared_keys(f"flood-{i}").public_bundle())
        assert len(opens) == 10  # nine valid bundles, each validated: no quota hit
        n.search(header("FR"), probe_for(shared_keys("FR")))
        assert n.engine.searches == 1
        # DE's own oldest went, for space.
        with pytest.raises(PreconditionFailed, match="unknown key id"):
            n.search(header("DE"), probe_for(shared_keys("flood-0")))
    finally:
        n.close()


def test_a_registration_flood_is_refused_by_the_states_own_quota_unopened(
    tmp_path: Path, opens: list[KeyBundle]
) -> None:
    """Each new bundle costs the node a quarter of a second of a core to validate: beyond
    its quota a state's new bundles are refused (RESOURCE_EXHAUSTED) before they are
    opened, a repeat of a live one costs nothing, and other states are served."""
    n = make_node(tmp_path, records=0, key_registration_burst=2)
    try:
        de = [shared_keys(s).public_bundle() for s in ("DE", "IT", "ES")]
        n.service.register_keys(header("DE"), de[0])
        n.service.register_keys(header("DE"), de[1])
        with pytest.raises(ResourceLimit, match="DE has used its key registration quota"):
            n.service.register_keys(header("DE"), de[2])
        assert len(opens) == 2
        n.service.register_keys(header("DE"), de[0])  # live: no token needed
        n.service.register_keys(header("FR"), shared_keys("FR").public_bundle())
        n.search(header("FR"), probe_for(shared_keys("FR")))
        assert len(opens) == 3 and n.engine.searches == 1
    finally:
        n.close()


def test_bundle_with_a_secret_key_is_refused_unopened(
    it_node: Node, opens: list[KeyBundle]
) -> None:
    keys = shared_keys("DE")
    with pytest.raises(HEError, match="secret key"):
        it_node.service.register_keys(header("DE"), keys.private_bundle())
    assert opens == []
    assert it_node.service.keys.check_registrable(keys.key_id, "DE") is None  # none registered
    with pytest.raises(PreconditionFailed, match="unknown key id"):
        it_node.search(header("DE"), probe_for(keys))
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
    # Refused even with a valid record of the search: the state searches nationally.
    with pytest.raises(PermissionDenied, match="own register"):
        it_node.search(header(STATE), probe_for(keys))
    assert it_node.engine.searches == 0


@pytest.mark.parametrize("version", ["", "2026-10-v1", THRESHOLD_VERSION + "x"])
def test_wrong_threshold_version_is_precondition_failed(it_node: Node, version: str) -> None:
    hdr = header("DE")
    with pytest.raises(PreconditionFailed, match="threshold version"):
        it_node.search(hdr, probe_for(shared_keys("DE")), version)
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
        it_node.search(header("DE"), probe)
    assert it_node.engine.searches == 0


def test_search_off_the_record_is_refused_before_any_he_work(it_node: Node, tmp_path: Path) -> None:
    svc, record = it_node.service, it_node.coordinator
    keys = shared_keys("DE")
    svc.register_keys(header("DE"), keys.public_bundle())
    hdr, probe = header("DE"), probe_for(keys)
    signed = it_node.sign(hdr, probe)
    other_probe = probe_for(keys)  # the same template, encrypted again: another ciphertext
    event = search_authorized(hdr, probe.ciphertext, probe.key_id, [STATE], signed=signed)
    valid = record.authorize(svc, event)

    # An entry the node never saw in a checkpoint it verified.
    unseen = record.audit.log.append(event)
    record.audit.log.checkpoint()
    size = record.audit.log.size
    proof = tuple(record.audit.log.inclusion_proof(unseen.seq, size))
    # The same entry in a log signed by another key of the coordinator's name.
    forged = CoordinatorRecord(tmp_path / "elsewhere")
    try:
        forged_entry = forged.audit.log.append(event)
    finally:
        forged.close()
    off_record: list[tuple[str, Authorization]] = [
        ("no verified checkpoint", Authorization(unseen.raw, unseen.seq, size, proof)),
        ("another probe", record.authorize(svc, search_authorized(
            hdr, other_probe.ciphertext, probe.key_id, [STATE], signed=signed))),
        ("another case", record.authorize(svc, search_authorized(
            replace(hdr, case_reference="CASE-2"), probe.ciphertext, probe.key_id, [STATE],
            signed=signed))),
        ("another operator", record.authorize(svc, search_authorized(
            replace(hdr, operator="officer-2"), probe.ciphertext, probe.key_id, [STATE],
            signed=signed))),
        ("other registers", record.authorize(svc, search_authorized(
            hdr, probe.ciphertext, probe.key_id, ["FR"], signed=signed))),
        ("not a search", record.authorize(svc, hit_verified(
            hdr, STATE, [b"\0" * 8], signed=signed))),
        ("another signed request", record.authorize(svc, search_authorized(
            hdr, probe.ciphertext, probe.key_id, [STATE], signed=it_node.sign(hdr, probe)))),
        ("wrong index", replace(valid, index=valid.index + 1)),
        ("wrong proof", replace(valid, proof=(*valid.proof[::-1], b"\0" * 32))),
        ("forged entry", replace(valid, entry=forged_entry.raw)),
    ]  # fmt: skip
    for why, authorization in off_record:
        with pytest.raises(PermissionDenied, match="not on record"):
            svc.search(hdr, probe, THRESHOLD_VERSION, authorization, signed, never)
        assert it_node.engine.searches == 0, why
    with pytest.raises(PermissionDenied, match="not on record"):
        Authorization(b"", 0, 0, ())  # a request without any entry
    # The refusals left the query id and the signed request unused: the search on record
    # works.
    result = svc.search(hdr, probe, THRESHOLD_VERSION, valid, signed, never)
    assert it_node.engine.searches == 1 and len(result.blocks) == 4


def test_hit_details_need_the_coordinators_verified_entry(it_node: Node) -> None:
    svc, record = it_node.service, it_node.coordinator
    keys = shared_keys("DE")
    svc.register_keys(header("DE"), keys.public_bundle())
    ids, templates = it_node.store.templates()
    hdr, probe = header("DE"), probe_for(keys, templates[5])
    result = it_node.search(hdr, probe)
    handles = [
        encode_handle(b, int(position))
        for b, block in enumerate(result.blocks)
        for position in np.flatnonzero(keys.decrypt_matches(block))
    ]
    assert len(handles) == 1
    # Each attempt is a newly signed resolve (a refused one has used its nonce), named by an
    # entry that is wrong in exactly one way.
    wrong: list[tuple[str, Callable[[SignedRequest], Authorization]]] = [
        # The search's own entry is not a verification of its hits.
        ("a search entry", lambda s: record.authorize(svc, search_authorized(
            hdr, probe.ciphertext, probe.key_id, [STATE], signed=s))),
        ("other hits", lambda s: record.authorize(svc, hit_verified(
            hdr, STATE, [encode_handle(0, 0)], signed=s))),
        ("nobody verified", lambda s: record.authorize(svc, hit_verified(
            hdr, STATE, handles, verifiers=(), signed=s))),
        ("another register", lambda s: record.authorize(svc, hit_verified(
            hdr, "FR", handles, signed=s))),
        ("another unit", lambda s: record.authorize(svc, hit_verified(
            replace(hdr, unit="unit-9"), STATE, handles, signed=s))),
        ("another signed resolve", lambda s: record.authorize(svc, hit_verified(
            hdr, STATE, handles, signed=signed_resolve(it_node.tmp, hdr)))),
    ]  # fmt: skip
    for why, authorize in wrong:
        signed = signed_resolve(it_node.tmp, hdr)
        with pytest.raises(PermissionDenied, match="not on record"):
            svc.hit_details(hdr, handles, authorize(signed), signed)
            pytest.fail(f"details revealed for {why}")
    authorization, signed = it_node.verified(hdr, handles)
    sealed = opened(probe, result, hdr)
    seen = it_node.released(hdr, handles, sealed)
    verdicts = confirmations(it_node.tmp, hdr, [(STATE, h) for h in handles], evidence=seen)
    (hit,) = svc.hit_details(hdr, handles, authorization, signed, verdicts, sealed).hits
    assert hit.reference == it_node.store.get(int(ids[5])).reference
    # The same signed resolve once more: a replay, of a query already resolved.
    with pytest.raises(PermissionDenied, match=r"already (used|released)"):
        svc.hit_details(hdr, handles, authorization, signed, verdicts, sealed)


def test_search_and_details_need_the_requesters_signature(it_node: Node) -> None:
    """On the record is not enough: the request itself must be signed by an officer of the
    requesting state (their own key: never the workstation's), for this very search, and
    is checked before any HE work."""
    svc, record = it_node.service, it_node.coordinator
    keys = shared_keys("DE")
    svc.register_keys(header("DE"), keys.public_bundle())
    hdr, probe = header("DE"), probe_for(keys)
    probe_hash = digest_hex(probe.ciphertext)
    german, french = request_signer(it_node.tmp, "DE"), request_signer(it_node.tmp, "FR")
    signed = german.sign(hdr, "lookup", probe_hash)
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    cases: list[tuple[SignedRequest | None, str]] = [
        (None, "not signed"),
        (french.sign(hdr, "lookup", probe_hash), "signed by a officer of FR, not by an officer"),
        (workstation_signer(it_node.tmp, "DE").sign(hdr, "lookup", probe_hash),
         "signed by a operator of DE, not by an officer of DE"),
        (german.sign(hdr, "lookup", digest_hex(probe_for(keys).ciphertext)), "another probe"),
        (german.sign(hdr, "resolve"), "not a lookup"),
        (german.sign(replace(hdr, case_reference="CASE-9"), "lookup", probe_hash),
         "differs from the request: case_reference"),
        (replace(signed, signature=flipped), "signature does not verify"),
    ]  # fmt: skip
    for request, message in cases:
        # On the record as the coordinator would have logged it: naming what is sent.
        authorization = it_node.authorize(hdr, probe, request or signed)
        with pytest.raises(PermissionDenied, match=message):
            svc.search(hdr, probe, THRESHOLD_VERSION, authorization, request, never)
        assert it_node.engine.searches == 0, message
    handles = [encode_handle(0, 0)]
    for request, message in ((None, "not signed"), (signed, "not a resolve")):
        named = request or signed_resolve(it_node.tmp, hdr)
        authorization = record.authorize(svc, hit_verified(hdr, STATE, handles, signed=named))
        with pytest.raises(PermissionDenied, match=message):
            svc.hit_details(hdr, handles, authorization, request)
    # Nothing was consumed by the refusals: the signed search on record works.
    authorization = it_node.authorize(hdr, probe, signed)
    result = svc.search(hdr, probe, THRESHOLD_VERSION, authorization, signed, never)
    assert it_node.engine.searches == 1 and len(result.blocks) == 4


def test_decoy_blocks_are_made_while_the_engine_searches(
    it_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer's decoy blocks are made in a thread while an engine that searches in other
    processes searches (they do not depend on the probe), each used once; a search that
    fails stops that thread. An engine in the node's own process gets no such thread."""
    svc, engine = it_node.service, it_node.engine
    # The test's engine searches in this process: as if it were search workers.
    monkeypatch.setattr(node.service, "_searches_elsewhere", lambda engine: True)
    keys = shared_keys("DE")
    svc.register_keys(header("DE"), keys.public_bundle())
    made: list[tuple[str, int]] = []
    original = svc._padding_blocks

    def recording(
        keys: EvaluationKeys, count: int, stop: threading.Event | None = None
    ) -> list[bytes]:
        blocks = original(keys, count, stop)
        made.append((threading.current_thread().name, len(blocks)))
        return blocks

    monkeypatch.setattr(svc, "_padding_blocks", recording)
    search = engine.search
    seen_during: list[bool] = []

    def slow_search(*args: Any, **kwargs: Any) -> SearchOutput:
        # Until the padding thread is done: then the answer needs nothing more after it.
        deadline = time.monotonic() + 60
        while not made and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_during.append(bool(made))
        return search(*args, **kwargs)

    monkeypatch.setattr(engine, "search", slow_search)
    first = it_node.search(header("DE"), probe_for(keys))
    # One block of records, three decoys, all made ahead: none after the search.
    assert seen_during == [True]
    assert made[0] == ("padding", 3) and all(count == 0 for _, count in made[1:])
    assert len(first.blocks) == 4 and len(set(first.blocks)) == 4
    second = it_node.search(header("DE"), probe_for(keys))
    assert not set(first.blocks) & set(second.blocks)  # fresh decoys, fresh blocks

    def failing(*args: Any, **kwargs: Any) -> SearchOutput:
        raise HEError("the search failed")

    monkeypatch.setattr(engine, "search", failing)
    made.clear()
    with pytest.raises(HEError):
        it_node.search(header("DE"), probe_for(keys))
    assert not any(t.name == "padding" for t in threading.enumerate())  # stopped, joined
    assert all(name == "padding" for name, _ in made)  # none made after a failed search

    monkeypatch.undo()  # the real engine, in this process, and the real test for it
    made.clear()
    monkeypatch.setattr(svc, "_padding_blocks", recording)
    third = it_node.search(header("DE"), probe_for(keys))
    assert len(third.blocks) == 4
    assert made == [(threading.current_thread().name, 3)]  # after the search, no thread
