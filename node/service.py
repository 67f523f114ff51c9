"""The node's plain-Python service: enrolment, encrypted search and hit details.

The node holds its register in the clear (it is its own data) and computes similarity under
the requester's key: it never holds a secret key and never decrypts. A search result names
records only through per-query random handles (:mod:`node.handles`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedmatch.domain import HitDetail, QueryHeader
from fedmatch.errors import InvalidInput, PermissionDenied, PreconditionFailed
from fedmatch.he.engine import SearchEngine, create_engine
from fedmatch.he.keys import EvaluationKeys, KeyBundle, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, get_param_set
from fedmatch.limits import HANDLE_BYTES, MAX_HANDLES_PER_REQUEST
from node.config import NodeConfig
from node.handles import HandleRegistry
from node.records import NewRecord
from node.store import RecordStore

__all__ = ["NodeService", "ProbeSpec", "ResultBlockOut", "SearchResult"]

log = logging.getLogger("fedmatch.node")


@dataclass(frozen=True)
class ProbeSpec:
    """An encrypted probe as received: ciphertext plus what it claims to be."""

    param_set: str
    ciphertext: bytes
    model_id: str
    dimension: int


@dataclass(frozen=True)
class ResultBlockOut:
    ciphertext: bytes
    count: int
    handles: bytes


@dataclass(frozen=True)
class SearchResult:
    member_state: str
    blocks: tuple[ResultBlockOut, ...]
    record_count: int


class _KeyCache:
    """Validated evaluation keys by bundle digest, bounded (LRU)."""

    def __init__(self, capacity: int = 16) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, EvaluationKeys] = OrderedDict()

    def get(self, bundle: KeyBundle) -> EvaluationKeys:
        if bundle.secret_key:
            # Checked before the cache so a bundle with a secret is refused even if its
            # public parts were seen before.
            return open_key_bundle(bundle)
        digest = bundle.digest()
        with self._lock:
            keys = self._keys.get(digest)
            if keys is not None:
                self._keys.move_to_end(digest)
                return keys
        keys = open_key_bundle(bundle)
        with self._lock:
            self._keys[digest] = keys
            while len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
        return keys


class NodeService:
    def __init__(
        self,
        config: NodeConfig,
        store: RecordStore,
        engine: SearchEngine | None = None,
        handles: HandleRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine or create_engine(DEFAULT_PARAM_SET, config.dimension)
        self.handles = handles or HandleRegistry(ttl_seconds=config.handle_ttl_seconds)
        self._keys = _KeyCache()
        # One lock orders enrolments against searches, so a search sees the engine's rows
        # and the row ids from the same moment. HE work holds the GIL anyway.
        self._lock = threading.Lock()
        ids, templates = store.templates()
        self.engine.load(templates)
        self._ids = ids

    @property
    def member_state(self) -> str:
        return self.config.member_state

    def record_count(self) -> int:
        return int(self._ids.shape[0])

    def enroll(self, header: QueryHeader, record: NewRecord) -> int:
        if header.requesting_state != self.member_state:
            raise PermissionDenied("only this node's own member state may enrol records")
        with self._lock:
            (row_id,) = self.store.add_many([record])
            self.engine.append(record.template.reshape(1, -1))
            self._ids = np.append(self._ids, np.int64(row_id))
            return self.record_count()

    def search(
        self,
        header: QueryHeader,
        bundle: KeyBundle,
        probe: ProbeSpec,
        should_stop: Callable[[], bool],
    ) -> SearchResult:
        if header.requesting_state == self.member_state:
            raise PermissionDenied("a state searches its own register nationally, not here")
        if probe.model_id != self.store.model_id:
            raise PreconditionFailed(
                f"probe from model {probe.model_id!r}; this register holds {self.store.model_id!r}"
            )
        if probe.dimension != self.store.dimension:
            raise InvalidInput(f"probe dimension must be {self.store.dimension}")
        if probe.param_set != bundle.param_set:
            raise InvalidInput("probe and key bundle name different parameter sets")
        params = get_param_set(probe.param_set)
        if params != self.engine.params:
            raise PreconditionFailed("this node does not search with that parameter set")
        keys = self._keys.get(bundle)
        with self._lock:
            ids = self._ids
            blocks = self.engine.search(keys, probe.ciphertext, should_stop)
        handles = self.handles.issue(header.query_id, header.requesting_state, ids)
        out = []
        start = 0
        for block in blocks:
            end = start + block.count
            out.append(
                ResultBlockOut(
                    ciphertext=block.ciphertext,
                    count=block.count,
                    handles=handles[start * HANDLE_BYTES : end * HANDLE_BYTES],
                )
            )
            start = end
        log.info(
            "search query=%s from=%s purpose=%s records=%d",
            header.query_id,
            header.requesting_state,
            header.purpose.value,
            len(ids),
        )
        return SearchResult(self.member_state, tuple(out), len(ids))

    def hit_details(self, header: QueryHeader, handles: Sequence[bytes]) -> list[HitDetail]:
        if not handles:
            raise InvalidInput("no handles given")
        if len(handles) > MAX_HANDLES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_HANDLES_PER_REQUEST} handles per request")
        out = []
        for handle in handles:
            if len(handle) != HANDLE_BYTES:
                raise InvalidInput(f"a handle is {HANDLE_BYTES} bytes")
            record_id = self.handles.resolve(header.query_id, header.requesting_state, handle)
            meta = self.store.get(record_id)
            out.append(
                HitDetail(
                    member_state=self.member_state,
                    handle=handle,
                    category=meta.category,
                    reference=meta.reference,
                    event_date=meta.event_date,
                    event_place=meta.event_place,
                    capture_date=meta.capture_date,
                    sex=meta.sex,
                )
            )
        log.info(
            "hit details query=%s for=%s count=%d",
            header.query_id,
            header.requesting_state,
            len(out),
        )
        return out
