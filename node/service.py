"""The node's plain-Python service: enrolment, key epochs, encrypted search, hit details.

The node holds its register in the clear (it is its own data) and computes masked match
results under the requester's key: it never holds a secret key and never decrypts. A result
position names a record only through the per-query layout (:mod:`node.handles`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from fedmatch.audit.entry import EventKind, SignedEntry, digest_hex
from fedmatch.audit.events import handles_digest, header_event, refusal_event, same_request
from fedmatch.audit.note import NoteVerifier
from fedmatch.audit.party import COORDINATOR_ORIGIN, PartyAudit
from fedmatch.audit.register import Reconciliation
from fedmatch.audit.witness import Authorization, Witness, WitnessAnswer
from fedmatch.domain import (
    Category,
    EncryptedProbe,
    HitDetail,
    Purpose,
    QueryHeader,
    reference_digests,
)
from fedmatch.errors import (
    ConfigError,
    FedmatchError,
    HEError,
    InvalidInput,
    PermissionDenied,
    PreconditionFailed,
    Unavailable,
)
from fedmatch.grpcutil.auth import caller
from fedmatch.he.engine import (
    PackedBase,
    PackedEngine,
    SearchEngine,
    SearchOutput,
    padded_block_count,
    with_padding,
)
from fedmatch.he.engines import create_engine
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.params import ParamSet, get_param_set
from fedmatch.he.sharded import default_workers
from fedmatch.he.uniform import probe_commitment
from fedmatch.heap import release_free_heap
from fedmatch.protocol.epochs import EpochTable
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.limits import HANDLE_BYTES, MAX_HANDLES_PER_REQUEST
from fedmatch.protocol.opening import OpeningKey, check_opening
from fedmatch.protocol.packet import SealedPacket, seal_packet
from fedmatch.protocol.ratelimit import StateBuckets
from fedmatch.protocol.statement import SignedRequest, VerifiedRequest
from fedmatch.protocol.turns import FairTurns
from fedmatch.protocol.verification import (
    DIFFERENT_SEX_CONFIRMATIONS,
    MAX_VERDICTS,
    HitKey,
    SignedVerdict,
    Verdict,
    VerdictStatement,
    assess_all,
    check_evidence,
    needs_two_people,
    verify_verdict,
)
from node.config import NodeConfig
from node.handles import HandleRegistry, QueryRelease
from node.locks import register_write
from node.packets import candidate_packet
from node.policy import SearchPolicy
from node.reconcile import Reconciler
from node.records import NewRecord, RecordMeta
from node.retention import check_enrolment_age, check_resettlement_basis
from node.store import RecordStore

if TYPE_CHECKING:
    from fedmatch.biometrics.pipeline import FacePipeline

__all__ = ["MAX_PHOTO_BYTES", "NodeService", "RevealedHits", "SearchResult", "build_engine"]

# A photograph for enrolment: a 12-megapixel JPEG is ~4 MB.
MAX_PHOTO_BYTES = 8 * 1024 * 1024

log = logging.getLogger("fedmatch.node")

_CODES = {c: i for i, c in enumerate(Category)}
_ANSWERS_KEPT = 16
_ERASED = np.uint8(255)  # the category code of an erased row (node/lifecycle.py)


# The encrypted kernel decides a score within 1e-4 of the threshold (fedmatch.he.params): a
# record it found at t may score t - 1e-4 in the clear. Refusing it would refuse an honest
# resolve; accepting it releases nothing the kernel did not already call a match.
_RELEASE_TOLERANCE = 1e-4


# How long the checkpoint thread waits for the register's writes to pause (a backup may hold
# them longer: the reconciliation entry then comes with a later checkpoint).
_RECONCILE_WAIT_SECONDS = 5.0


def _warn_if_unreconciled(register: str, result: Reconciliation) -> None:
    if not result.reconciled:
        log.warning(
            "register %s does not reconcile with its audit log: %s. The node serves its "
            "records and is unhealthy until this is resolved (fedmatch node status names "
            "the rows; the audit log has a register_reconciled entry saying so)",
            register,
            "; ".join(result.problems()),
        )


def _subject(category: str) -> dict[str, str]:
    return {"subject_category": category} if category else {}


@dataclass(frozen=True)
class RevealedHits:
    hits: tuple[HitDetail, ...]
    # Different-sex hits confirmed by fewer than two people: nothing of them revealed.
    held_for_review: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    # No register size: the blocks are padded to a bucket (padded_block_count).
    member_state: str
    blocks: tuple[bytes, ...]
    # This query's opening key (fedmatch/protocol/opening.py).
    opening_key: bytes = b""


def build_engine(config: NodeConfig) -> SearchEngine:
    """The search engine ``config`` asks for: local processes or Ray actors."""
    params = get_param_set(config.he_param_set)
    if config.engine == "ray":
        return create_engine(
            params, config.dimension, config.ray_workers,
            backend="ray", ray_address=config.ray_address,
        )  # fmt: skip
    workers = config.search_workers or default_workers()
    return create_engine(params, config.dimension, workers)


def _searches_elsewhere(engine: SearchEngine) -> bool:
    """Whether ``engine`` searches in other processes (search workers, Ray actors): then
    this process is idle while it searches. An engine in this process holds the GIL
    (tenseal does), so a thread beside it would only take turns with it."""
    return not isinstance(engine, PackedBase)


class _PaddingAhead:
    """The decoy blocks a search's answer will need, made in a thread of this process while
    the engine's workers search: the process only waits for them then, and a decoy block
    does not depend on the probe (~5 ms each on the kernel sets; 3 of them for 100,000
    records and 5 for 1M, which took that long after the search before); none when the
    engine searches in this process (:func:`_searches_elsewhere`). Leaving the block
    stops the thread after the block it is making and waits for it; whatever it did not
    make, :meth:`NodeService._padded` makes."""

    def __init__(self, service: NodeService, keys: EvaluationKeys, count: int) -> None:
        self.blocks: list[bytes] = []
        self._count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._make, args=(service, keys, count), name="padding", daemon=True
        )

    def _make(self, service: NodeService, keys: EvaluationKeys, count: int) -> None:
        try:
            self.blocks = service._padding_blocks(keys, count, self._stop)
        except Exception:  # noqa: BLE001 - the answer's own padding step makes them again
            log.warning("decoy blocks made ahead failed; made after the search instead")

    def __enter__(self) -> _PaddingAhead:
        if self._count > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._stop.set()  # the search failed: no answer will be padded
        if self._thread.is_alive():
            self._thread.join()


class NodeService:
    def __init__(
        self,
        config: NodeConfig,
        store: RecordStore,
        audit: PartyAudit,
        gate: Gate,
        policy: SearchPolicy | None = None,
        engine: SearchEngine | None = None,
        handles: HandleRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.gate = gate
        self.policy = policy or SearchPolicy()
        # Answers kept for a retried call (same query id, same signed request): a retry is
        # answered again, not searched again and not refused as a reused query id.
        self._answers: OrderedDict[str, tuple[str, SearchResult]] = OrderedDict()
        # Its own lock: a search holds the main lock while it runs, and the next searches
        # must wait for their turn (below), not on the main lock in arrival order.
        self._answers_lock = threading.Lock()
        # Makers of decoy blocks, one per parameter set (SEAL objects: one thread at a time).
        self._padders: dict[str, PackedEngine] = {}
        self._padding_lock = threading.Lock()
        if not audit.config.coordinator_key:
            raise ConfigError("audit.coordinator_key is required: a node witnesses the coordinator")
        directory = audit.config.directory
        self.witness = Witness(
            directory / "witness.json",
            directory / "evidence",
            NoteVerifier.from_vkey(audit.config.coordinator_key),
            COORDINATOR_ORIGIN,
            audit.signer,
        )
        self.engine = engine or build_engine(config)
        with self._padding_lock:
            self._padder(self.engine.params)
        self.handles = handles or HandleRegistry(ttl_seconds=config.handle_ttl_seconds)
        # Validated keys by key id, each state's own bounded set (fedmatch.protocol.epochs),
        # and how often a state may have a bundle validated (each costs seconds of a core).
        self.keys: EpochTable[EvaluationKeys] = EpochTable(
            config.key_epoch_seconds, config.max_key_epochs
        )
        self.key_registrations = StateBuckets(
            config.key_registrations_per_hour, config.key_registration_burst, "key registration"
        )
        # One lock orders enrolments against searches, so a search sees the engine's rows
        # and the row ids from the same moment.
        self._lock = threading.Lock()
        # Searches take turns by requesting state (fedmatch.protocol.turns): a state with
        # many searches in flight delays another state's by at most one of its own, and
        # holds at most half the worker threads (the coordinator's calls for every state,
        # its witness rounds first, need the others).
        self._turns = FairTurns(per_state=max(1, config.max_workers // 2))
        self._faces: FacePipeline | None = None
        self._faces_lock = threading.Lock()
        ids, templates = store.templates()
        self.engine.load(templates)
        del templates
        self._ids = ids
        # The store holds the templates: the engine re-reads the rows of a block it must
        # re-encode instead of keeping a second copy of the register (issue 20's memory).
        self.engine.read_rows_from(self._register_rows)
        # The load's temporaries are freed; give their pages back (fedmatch.heap).
        release_free_heap()
        self._categories = np.array([_CODES[c] for c in store.categories()], dtype=np.uint8)
        # Marked records (protection granted), aligned with the rows: hidden from the
        # purposes the policy does not let see them (node/lifecycle.py marks and unmarks).
        self._marked = store.marked_flags()
        # Called with (header, record ids) after details are revealed (node/lifecycle.py
        # remembers who was told about which record, to pass on a mark or an erasure).
        self.on_reveal: Callable[[QueryHeader, list[int]], None] | None = None
        # Every row compared with its entry in the log, once, before serving; then kept up
        # to date by this node's own writes (node/reconcile.py).
        self.reconciler = Reconciler(store, audit.log.directory)
        _warn_if_unreconciled(store.path.name, self.reconciler.result)
        audit.start_publishing(self.publish_checkpoint)
        audit.started(
            {"records": len(ids)},
            {
                "threshold": repr(config.threshold),
                "threshold_version": config.threshold_version,
                "he_param_set": self.engine.params.name,
                "model_id": store.model_id,
                "key_epoch_seconds": repr(config.key_epoch_seconds),
                "max_key_epochs": str(config.max_key_epochs),
                "search_policy": self.policy.version,
                "search_policy_sha": self.policy.fingerprint(),
                # Logged, so an auditor sees when one person was enough and on what basis.
                "hit_verifiers_required": str(config.confirmations_required),
                "hit_verification_waiver": config.verification_waiver,
            },
        )
        self.publish_checkpoint()  # the start's reconciliation entry, when one is due
        # Again after the per-row reads above (categories, marks, the reconciliation's
        # digests and log walk): their temporaries were freed after the first release.
        release_free_heap()

    def close(self) -> None:
        self.engine.close()

    def publish_checkpoint(self) -> bytes:
        """Publish a checkpoint of the log, logging a ``register_reconciled`` entry before
        it when the register changed since the last one (an unchanged register adds no
        entry: a node that only searches would otherwise grow its log by one entry per
        checkpoint interval). The entry is decided with the register's writes paused, so
        that it counts no row whose entry is not yet in the log, and the other way round;
        when they do not pause in time (a backup under way) it waits for the next one."""
        reconciler = self.reconciler
        if reconciler.due():
            try:
                with self.store.writes.exclusive(_RECONCILE_WAIT_SECONDS):
                    if reconciler.refresh():
                        _warn_if_unreconciled(self.store.path.name, reconciler.result)
                    event = reconciler.pending_entry()
                    if event is not None:
                        self.audit.record(event)
                        reconciler.logged_entry(event)
            except Unavailable:
                log.info("register writes did not pause: reconciliation entry left for later")
        return self.audit.log.checkpoint()

    def refused(self, request: str, header: QueryHeader | None, exc: FedmatchError) -> None:
        """Log a refused call with its reason (the servicer calls this for every one)."""
        self.audit.record(refusal_event(request, header, exc))

    def _check_coordinator_peer(self) -> None:
        """Over TLS, the caller must be the coordinator whose log key this node witnesses:
        a coordinator certificate carrying another signing key is someone else."""
        peer = caller()
        if peer is not None and peer.signing_key != self.witness.coordinator_key:
            raise PermissionDenied("the calling coordinator's key is not the one witnessed")

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> WitnessAnswer:
        return self.witness.add_checkpoint(old_size, proof, note)

    @property
    def member_state(self) -> str:
        return self.config.member_state

    def _padded(
        self, output: SearchOutput, keys: EvaluationKeys, ready: Sequence[bytes] = ()
    ) -> SearchOutput:
        """``output`` padded with decoy blocks to its bucket, so that the answer does not
        tell the requester the register's size (only its bucket): ``ready`` ones made for
        this query first (:class:`_PaddingAhead`), the rest here."""
        missing = padded_block_count(len(output.blocks)) - len(output.blocks)
        if missing <= 0:
            return output
        padding = list(ready[:missing])
        padding += self._padding_blocks(keys, missing - len(padding))
        return with_padding(output, padding)

    def _padding_blocks(
        self, keys: EvaluationKeys, count: int, stop: threading.Event | None = None
    ) -> list[bytes]:
        """``count`` fresh decoy blocks (fewer if ``stop`` is set meanwhile)."""
        blocks: list[bytes] = []
        if count <= 0:
            return blocks
        with self._padding_lock:
            padder = self._padder(keys.params)
            while len(blocks) < count and not (stop is not None and stop.is_set()):
                blocks.append(padder.padding_block(keys, self.config.threshold))
        return blocks

    def _padder(self, params: ParamSet) -> PackedEngine:
        """The maker of decoy blocks for ``params`` (under the padding lock): no register,
        it only makes decoy blocks, in this process; its native steps compiled when it is
        made (at start for the engine's set), not in a query."""
        padder = self._padders.get(params.name)
        if padder is None:
            padder = PackedEngine(params, self.config.dimension)
            padder.warm_natives()
            self._padders[params.name] = padder
        return padder

    def _register_rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """The engine's rows ``start`` to ``stop``, read from the store; an erased row (id -1
        here, or its record gone from the store) is all zeros, as the engine blanked it.
        Called by the engine under this service's lock (enrolment, erasure)."""
        ids = self._ids[start:stop]
        out = np.zeros((len(ids), self.config.dimension), dtype=np.float32)
        live = ids[ids >= 0]
        if live.size:
            found, templates = self.store.templates_between(int(live.min()), int(live.max()))
            known = np.isin(found, ids)
            order = np.argsort(ids, kind="stable")
            rows = order[np.searchsorted(ids, found[known], sorter=order)]
            out[rows] = templates[known]
        return out

    def record_count(self) -> int:
        # Erased rows stay as blank positions (-1) until a restart; they are not records.
        return int(np.count_nonzero(self._ids >= 0))

    def forget_records(self, record_ids: Sequence[int]) -> None:
        """Take erased records out of every in-memory place: the engine's encoded blocks
        (blanked: they can never match), the row-id array (-1), pending queries' handles and
        the answers kept for retries (they were computed with the records)."""
        gone = np.asarray(record_ids, dtype=np.int64)
        with self._lock:
            rows = np.flatnonzero(np.isin(self._ids, gone))
            if rows.size:
                self.engine.erase([int(r) for r in rows])
                ids = self._ids.copy()  # a new array: pending queries keep their snapshot
                ids[rows] = -1
                self._ids = ids
                categories = self._categories.copy()
                categories[rows] = _ERASED  # no category: excluded from every search
                self._categories = categories
                marked = self._marked.copy()
                marked[rows] = False
                self._marked = marked
            self.handles.forget(gone)
            with self._answers_lock:
                self._answers.clear()

    def set_marked(self, record_id: int, marked: bool) -> None:
        """Apply a mark (or its removal) to the search's exclusion of marked records."""
        with self._lock:
            rows = np.flatnonzero(self._ids == record_id)
            flags = self._marked.copy()
            flags[rows] = marked
            self._marked = flags

    def enroll_photo(
        self,
        header: QueryHeader,
        meta: RecordMeta,
        photo: bytes,
        name: str,
        pick: int | Literal["largest"] | None,
    ) -> int:
        """Enrol from a photograph: the node's own face model makes the template, and every
        quality gate applies (a doubtful photo is refused with its reason, never enrolled)."""
        if header.requesting_state != self.member_state:
            raise PermissionDenied("only this node's own member state may enrol records")
        if len(photo) > MAX_PHOTO_BYTES:
            raise InvalidInput(f"photo exceeds {MAX_PHOTO_BYTES} bytes")
        # The minimum age first: a child who may be under 6 is refused before any face work;
        # so is resettlement data the register may not hold (Eurodac recast Art. 29(2)).
        check_enrolment_age(meta.birth_date, meta.birth_date_estimated, meta.capture_date)
        check_resettlement_basis(meta.category, meta.resettlement_basis)
        faces = self._face_pipeline()
        # The template and the facial image an expert compares a hit with, from one detection.
        got = faces.enrolment_bytes(photo, name, pick=pick)
        record = NewRecord(meta, got.template, faces.model_id, got.image, got.quality)
        return self.enroll(header, record)

    def _face_pipeline(self) -> FacePipeline:
        # Loaded on first use: a node that only receives templates never loads the models.
        with self._faces_lock:
            if self._faces is None:
                from fedmatch.biometrics.pipeline import FacePipeline

                self._faces = FacePipeline.for_model(self.config.face_model)
            return self._faces

    @register_write  # the row and its audit entry, both or neither in a backup
    def enroll(self, header: QueryHeader, record: NewRecord) -> int:
        if header.requesting_state != self.member_state:
            raise PermissionDenied("only this node's own member state may enrol records")
        # A resettlement record states the article its data were taken under (its retention,
        # Eurodac recast Art. 29(3)-(5)); Art. 18(1) data are not recorded (Art. 29(2)).
        check_resettlement_basis(record.meta.category, record.meta.resettlement_basis)
        (digest,) = reference_digests(self.member_state, (record.meta.reference,))
        with self._lock:
            (row_id,) = self.store.add_many([record])
            self.engine.append(record.template.reshape(1, -1))
            # A new array, not an in-place change: pending queries keep their snapshot.
            self._ids = np.append(self._ids, np.int64(row_id))
            self._categories = np.append(self._categories, np.uint8(_CODES[record.meta.category]))
            self._marked = np.append(self._marked, False)
            size = self.record_count()
        try:
            self.audit.record(
                header_event(
                    EventKind.RECORD_ENROLLED,
                    header,
                    registers=(self.member_state,),
                    outcome="ok",
                    labels={
                        "record": str(row_id),
                        # As erasures and marks name it: the register's reconciliation
                        # ties the row to this entry (fedmatch/audit/register.py).
                        "record_digest": digest.hex(),
                        "category": record.meta.category.value,
                        # Whether an expert can check a hit on it by image (no image: bulk load).
                        "facial_image": "yes" if record.image is not None else "no",
                    },
                )
            )
        except BaseException:
            # The row is in the register without its entry: unlogged, and reported so.
            self.reconciler.added(row_id, digest, logged=False)
            raise
        self.reconciler.added(row_id, digest, logged=True)
        return size

    def register_keys(self, header: QueryHeader, bundle: KeyBundle) -> tuple[str, float]:
        """Validate and keep a requester's key material for one epoch; (key id, expiry)."""
        if bundle.secret_key:
            raise HEError("key bundle carries a secret key; refused (send public material)")
        key_id = bundle.digest()
        state = header.requesting_state
        expires = self.keys.check_registrable(key_id, state)
        if expires is None:
            # Only a bundle that must be validated costs a token: a repeat is free.
            self.key_registrations.take(state)
            keys = open_key_bundle(bundle)
            if keys.params != self.engine.params:
                raise PreconditionFailed("this node does not search with that parameter set")
            # Only what the engine's searches need here (see SearchEngine.kept_keys).
            expires = self.keys.register(key_id, self.engine.kept_keys(keys), state)
        self.audit.record(
            header_event(
                EventKind.KEYS_REGISTERED,
                header,
                outcome="ok",
                labels={"key_id": key_id, "expires_unix": str(int(expires))},
            )
        )
        log.info("keys registered key=%s from=%s", key_id[:16], header.requesting_state)
        return key_id, expires

    def search(
        self,
        header: QueryHeader,
        probe: EncryptedProbe,
        threshold_version: str,
        authorization: Authorization,
        signed: SignedRequest | None,
        should_stop: Callable[[], bool],
    ) -> SearchResult:
        if header.requesting_state == self.member_state:
            raise PermissionDenied("a state searches its own register nationally, not here")
        # First, before any work: the search must be on the coordinator's record...
        self._check_coordinator_peer()
        entry = self.witness.check(authorization)
        probe_hash = digest_hex(probe.ciphertext)
        if (
            entry.kind is not EventKind.SEARCH_AUTHORIZED
            or not same_request(entry, header)
            or entry.event.probe_hash != probe_hash
            or self.member_state not in entry.event.registers
        ):
            raise PermissionDenied("not on record: the coordinator's entry is for another search")
        # ... and signed by an operator of the requesting state, as the coordinator logged.
        verified = self.gate.verify(signed, header, "lookup", probe_hash)
        if entry.event.labels.get("request") != verified.digest:
            raise PermissionDenied("not on record: the entry is for another signed request")
        with self._answers_lock:
            answered = self._answers.get(header.query_id)
        if answered is not None and answered[0] == verified.digest:
            return answered[1]  # a retry of the same call: the same answer, no new work
        self.gate.consume(verified)
        statement = verified.statement
        self.policy.check(
            header.purpose.value,
            statement.categories,
            verified.approver is not None,
            statement.prior_check,
        )
        self.gate.replay.charge(
            header.requesting_state, self.policy.requests_per_minute, self.policy.daily_quota
        )
        if threshold_version != self.config.threshold_version:
            raise PreconditionFailed(
                f"threshold version {threshold_version[:64]!r} is not this node's "
                f"{self.config.threshold_version!r}"
            )
        if probe.model_id != self.store.model_id:
            raise PreconditionFailed(
                f"probe from model {probe.model_id[:64]!r}; "
                f"this register holds {self.store.model_id!r}"
            )
        if probe.dimension != self.store.dimension:
            raise InvalidInput(f"probe dimension must be {self.store.dimension}")
        if get_param_set(probe.param_set) != self.engine.params:
            raise PreconditionFailed("this node does not search with that parameter set")
        keys, owner = self.keys.get(probe.key_id)  # unknown or retired: refused before work
        if owner != header.requesting_state:
            raise PermissionDenied("key id was registered by another member state")
        self.handles.reserve(header.query_id, header.requesting_state)
        started_ms = int(time.time() * 1000)  # the log records start and end of a search
        try:
            with self._turns.turn(header.requesting_state, should_stop), self._lock:
                ids = self._ids
                # Rows of categories the request did not name (or its purpose may not see)
                # can never match: excluded inside the encrypted computation.
                wanted = [_CODES[Category(c)] for c in statement.categories]
                exclude = ~np.isin(self._categories, wanted)
                if not self.policy.sees_marked(header.purpose.value):
                    exclude |= self._marked  # marked records, as category exclusion
                blocks = -(-self.engine.size // self.engine.params.block_records)
                ahead_count = padded_block_count(blocks) - blocks
                if not _searches_elsewhere(self.engine):
                    ahead_count = 0  # this process searches: nothing to overlap with
                with _PaddingAhead(self, keys, ahead_count) as ahead:
                    output = self.engine.search(
                        keys,
                        probe.ciphertext,
                        self.config.threshold,
                        should_stop,
                        exclude if exclude.any() else None,
                    )
            output = self._padded(output, keys, ahead.blocks)
        except BaseException:
            self.handles.release(header.query_id)
            raise
        # What releasing details will check: the opening of the probe's commitment, the
        # categories the signed request named, whether its purpose sees marked records.
        release = QueryRelease(
            OpeningKey(),
            probe_commitment(probe.ciphertext),
            frozenset(statement.categories),
            self.policy.sees_marked(header.purpose.value),
        )
        self.handles.record(header.query_id, header.requesting_state, output.layout, ids, release)
        self.audit.record(
            header_event(
                EventKind.SEARCH_ANSWERED,
                header,
                registers=(self.member_state,),
                probe_hash=probe_hash,
                outcome="ok",
                counts={"records_searched": len(ids)},
                labels={
                    "coordinator_index": str(entry.seq),
                    "key_id": probe.key_id,
                    "started_ms": str(started_ms),
                }
                # The declared category of the person searched, for the statistics.
                | _subject(statement.subject_category),
            )
        )
        log.info(
            "search query=%s from=%s purpose=%s records=%d",
            header.query_id,
            header.requesting_state,
            header.purpose.value,
            len(ids),
        )
        result = SearchResult(self.member_state, output.blocks, release.key.public_bytes())
        with self._answers_lock:
            self._answers[header.query_id] = (verified.digest, result)
            while len(self._answers) > _ANSWERS_KEPT:
                self._answers.popitem(last=False)
        return result

    def _proven_matches(
        self, header: QueryHeader, handles: Sequence[bytes], sealed_opening: bytes
    ) -> tuple[list[tuple[int, RecordMeta]], bytes]:
        """Each handle's record, once the requester opened its probe commitment to this
        node and the plain similarity with that record is at or above the threshold, for a
        category and mark state the signed search allowed (else PermissionDenied, for the
        whole request: a requester claiming a non-match is not served the rest); and the
        key to encrypt the answer to the opener with."""
        terms = self.handles.release_terms(header.query_id, header.requesting_state)
        opening, reply_key = terms.key.open_with_reply(
            sealed_opening, header.query_id, self.member_state, self.store.dimension
        )
        check_opening(opening, terms.commitment)
        probe = opening.template.astype(np.float64)
        probe /= np.linalg.norm(probe)
        out = []
        for handle in handles:
            record_id = self.handles.resolve(header.query_id, header.requesting_state, handle)
            meta = self.store.get(record_id)
            template = self.store.template(record_id).astype(np.float64)
            norm = float(np.linalg.norm(template))
            score = float(template @ probe) / norm if norm > 0.0 else -1.0
            why = (
                "category" if meta.category.value not in terms.categories
                else "marked" if not terms.sees_marked and self._is_marked(record_id)
                else "below_threshold" if score < self.config.threshold - _RELEASE_TOLERANCE
                else None
            )  # fmt: skip
            if why is not None:
                # One answer for every reason: the requester must not learn a record's
                # category or mark from a refused claim. The node's log keeps the reason.
                log.info("release refused query=%s reason=%s", header.query_id, why)
                raise PermissionDenied("a claimed hit is not a match this search may see")
            out.append((record_id, meta))
        return out, reply_key

    def _on_record(
        self,
        authorization: Authorization,
        signed: SignedRequest | None,
        header: QueryHeader,
        kind: EventKind,
        digest: str,
        probe_hash: str,
    ) -> tuple[SignedEntry, VerifiedRequest]:
        """The coordinator's ``kind`` entry (in a checkpoint this node cosigned) naming
        exactly these handles (``digest``) at this node, for this very signed request
        (PermissionDenied otherwise). A verified hit entry must also name its verifiers."""
        entry = self.witness.check(authorization)
        if (
            entry.kind is not kind
            or not same_request(entry, header)
            or self.member_state not in entry.event.registers
            or entry.event.labels.get(f"handles_{self.member_state.lower()}") != digest
            or (kind is EventKind.HIT_VERIFIED and not entry.event.verifiers)
        ):
            raise PermissionDenied(f"not on record: no {kind.value} entry for these handles")
        request_kind = "packets" if kind is EventKind.PACKETS_AUTHORIZED else "resolve"
        verified = self.gate.verify(signed, header, request_kind, probe_hash)
        if entry.event.labels.get("request") != verified.digest:
            raise PermissionDenied("not on record: the entry is for another signed request")
        return entry, verified

    def _check_handles(
        self, header: QueryHeader, handles: Sequence[bytes], details: bool = True
    ) -> None:
        """``details``: the handles' details are asked for (else their packets)."""
        if not handles:
            raise InvalidInput("no handles given")
        if details and header.purpose is Purpose.DATA_SUBJECT_REQUEST:
            # Such a search tells a data subject which states hold their data, nothing more:
            # its candidates' packets go to the verifiers (a state is named only once they
            # confirmed the record is the person, DOMAIN.md section 6), never details.
            raise PermissionDenied("hit details are refused for a data-subject request")
        if len(handles) > MAX_HANDLES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_HANDLES_PER_REQUEST} handles per request")
        if any(len(h) != HANDLE_BYTES for h in handles):
            raise InvalidInput(f"a handle is {HANDLE_BYTES} bytes")
        if len(set(handles)) != len(handles):
            raise InvalidInput("a handle is named twice")

    def verification_packets(
        self,
        header: QueryHeader,
        handles: Sequence[bytes],
        authorization: Authorization,
        signed: SignedRequest | None,
        sealed_opening: bytes,
        probe_image: str,
    ) -> list[SealedPacket]:
        """The verification packets of proven candidates (fedmatch/protocol/packet.py), on
        the coordinator's ``packets_authorized`` entry for exactly these handles and a
        request an operator of the requesting state signed, naming the probe image."""
        self._check_handles(header, handles, details=False)
        self._check_coordinator_peer()
        digest = handles_digest(handles)
        entry, verified = self._on_record(
            authorization, signed, header, EventKind.PACKETS_AUTHORIZED, digest, probe_image
        )
        self.handles.begin_packets(header.query_id, header.requesting_state, probe_image)
        records, reply_key = self._proven_matches(header, handles, sealed_opening)
        self.gate.replay.charge(
            header.requesting_state, self.policy.requests_per_minute, self.policy.daily_quota
        )
        self.gate.consume(verified)
        packets = [
            seal_packet(
                candidate_packet(self.store, record_id, meta, self.member_state, handle),
                reply_key,
                header.query_id,
            )
            for handle, (record_id, meta) in zip(handles, records, strict=True)
        ]
        self.handles.record_packets(
            header.query_id, probe_image, {p.handle: p.image_sha256 for p in packets}
        )
        without = sum(1 for p in packets if not p.image_sha256)
        self.audit.record(
            header_event(
                EventKind.PACKETS_RELEASED,
                header,
                registers=(self.member_state,),
                outcome="ok",
                counts={"packets": len(packets), "not_verifiable": without},
                labels={
                    "coordinator_index": str(entry.seq),
                    "handles": digest,
                    # What an auditor can match against the verdicts: the images' digests.
                    "images": digest_hex("".join(p.image_sha256 for p in packets).encode()),
                },
            )
        )
        log.info(
            "verification packets query=%s for=%s count=%d not_verifiable=%d",
            header.query_id,
            header.requesting_state,
            len(packets),
            without,
        )
        return packets

    def record_rejections(self, header: QueryHeader, verdicts: Sequence[SignedVerdict]) -> int:
        """The requester's verifiers rejected candidates of this node (their signed
        verdicts, relayed by the coordinator): checked, logged, and those records' details
        are never released for the query. Returns how many hits were newly rejected."""
        self._check_coordinator_peer()
        if not verdicts or len(verdicts) > MAX_VERDICTS:
            raise InvalidInput(f"between 1 and {MAX_VERDICTS} verdicts per report")
        checked = [
            verify_verdict(v, header.query_id, header.requesting_state, self.gate.verify_chain)
            for v in verdicts
        ]
        statements = [c.statement for c in checked]
        if any(
            st.verdict is not Verdict.REJECT or st.member_state != self.member_state
            for st in statements
        ):
            raise InvalidInput("a rejection report holds only rejections of this node's hits")
        probe_image, released = self.handles.evidence(header.query_id, header.requesting_state)
        check_evidence(statements, self._released(released), probe_image)
        handles = sorted({st.hit.handle for st in statements})
        new = self.handles.reject(header.query_id, header.requesting_state, handles)
        self.audit.record(
            header_event(
                EventKind.HIT_REJECTED,
                header,
                registers=(self.member_state,),
                outcome="rejected",
                reason=",".join(sorted({st.reason for st in statements})),
                verifiers=tuple(sorted({c.verifier for c in checked})),
                counts={"hits": len(handles), "new": new},
                labels={"handles": handles_digest(handles)},
            )
        )
        log.info("rejections query=%s hits=%d new=%d", header.query_id, len(handles), new)
        return new

    def _released(self, released: dict[bytes, str]) -> dict[HitKey, str]:
        return {HitKey(self.member_state, h): d for h, d in released.items()}

    def _hit_detail(self, handle: bytes, record_id: int, meta: RecordMeta) -> HitDetail:
        """A revealed hit: the event, and what Eurodac keeps of the record's Dublin status
        (recast Art. 16(1), 28(4), 31): the mark and its kind, the state indicated as
        responsible and its basis (the AMMR's take back goes to that state, Art. 36(1)(b)),
        the day the data were transmitted (enrolled: the recast's retention counts from
        it, Art. 29), transfer, removal, left-territory and relocation dates."""
        status = self.store.status(record_id)
        return HitDetail(
            member_state=self.member_state,
            handle=handle,
            category=meta.category,
            reference=meta.reference,
            event_date=meta.event_date,
            event_place=meta.event_place,
            capture_date=meta.capture_date,
            sex=meta.sex,
            mark=status.mark,
            marked_on=status.marked_at.date() if status.marked_at is not None else None,
            responsible_state=status.responsible_state,
            responsible_basis=status.responsible_basis,
            transmitted_on=self.store.enrolled_at(record_id).date(),
            transferred_on=status.transferred_on,
            removed_on=status.removed_on,
            left_territory_on=status.left_territory_on,
            relocated_to=status.relocated_to,
            relocated_on=status.relocated_on,
        )

    def _is_marked(self, record_id: int) -> bool:
        with self._lock:
            return bool(self._marked[self._ids == record_id].any())

    def hit_details(
        self,
        header: QueryHeader,
        handles: Sequence[bytes],
        authorization: Authorization,
        signed: SignedRequest | None,
        verdicts: Sequence[SignedVerdict] = (),
        sealed_opening: bytes = b"",
    ) -> RevealedHits:
        self._check_handles(header, handles)
        # Details are revealed only for hits the coordinator logged as verified, by whom,
        # at the signed request of an operator of the requesting state.
        self._check_coordinator_peer()
        digest = handles_digest(handles)
        entry, verified = self._on_record(
            authorization, signed, header, EventKind.HIT_VERIFIED, digest, ""
        )
        # Not on the coordinator's word alone: the verifiers' signed verdicts, checked here.
        assessed = assess_all(
            [HitKey(self.member_state, h) for h in handles],
            verdicts,
            header.query_id,
            header.requesting_state,
            self.config.confirmations_required,
            self.gate.verify_chain,
        )
        if any(not a.verified for a in assessed.values()):
            raise PermissionDenied(
                f"hit details need {self.config.confirmations_required} distinct verifiers' "
                "signed confirmations per hit and no rejection"
            )
        confirmers = sorted({v for a in assessed.values() for v in a.confirmed_by})
        if not set(confirmers) <= set(entry.event.verifiers):
            raise PermissionDenied("not on record: the verified hit entry names other verifiers")
        # Every verdict names the images this node released for its hit, and no hit was
        # rejected by the requester's verifiers before.
        probe_image, released = self.handles.evidence(header.query_id, header.requesting_state)
        check_evidence(
            (VerdictStatement.decode(v.statement) for v in verdicts),
            self._released(released),
            probe_image,
        )
        if set(handles) & self.handles.rejected(header.query_id, header.requesting_state):
            raise PermissionDenied("a hit of this request was rejected by the requester")
        records, _ = self._proven_matches(header, handles, sealed_opening)
        self.gate.replay.charge(
            header.requesting_state, self.policy.requests_per_minute, self.policy.daily_quota
        )
        # Consumed last: a request refused for another reason does not burn its nonce.
        self.gate.consume(verified)
        out = []
        revealed: list[int] = []
        held: list[bytes] = []
        for handle, (record_id, meta) in zip(handles, records, strict=True):
            check = assessed[HitKey(self.member_state, handle)]
            if (
                needs_two_people(meta.sex, check.probe_sex)
                and len(check.confirmed_by) < DIFFERENT_SEX_CONFIRMATIONS
            ):
                # A different-sex hit (or one whose probe's sex no verifier declared) is
                # always checked by two people: held for review.
                held.append(handle)
                continue
            revealed.append(record_id)
            out.append(self._hit_detail(handle, record_id, meta))
        categories: dict[str, int] = {}
        for hit in out:
            categories[hit.category.value] = categories.get(hit.category.value, 0) + 1
        self.audit.record(
            header_event(
                EventKind.HIT_DETAILS_REVEALED,
                header,
                registers=(self.member_state,),
                outcome="ok" if out else "held_for_review",
                verifiers=tuple(confirmers),
                counts=categories,
                labels={"coordinator_index": str(entry.seq), "handles": digest}
                | ({"held_for_review": str(len(held))} if held else {})
                | _subject(verified.statement.subject_category),
            )
        )
        if out:
            self.handles.mark_resolved(header.query_id)  # one resolve per query
        if self.on_reveal is not None:
            self.on_reveal(header, revealed)
        log.info(
            "hit details query=%s for=%s count=%d",
            header.query_id,
            header.requesting_state,
            len(out),
        )
        return RevealedHits(tuple(out), tuple(held))
