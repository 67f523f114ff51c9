"""Per-query result layouts and the position handles that refer into them.

A search returns masked results whose block order and slot rotation are fresh per query, so
a result position names a different record in every query. The node keeps, per pending
query, the layout and the row-id snapshot it searched, and resolves a position handle
(8 bytes: response block index and position, big-endian) back to a row id. The mapping
lives in memory for a bounded time and count; an expired or unknown query is not found.

With the layout it keeps what releasing details needs (fedmatch/protocol/opening.py): the
query's opening key, the probe's commitment, the categories the signed request named, whether
its purpose sees marked records, and whether the query's one resolve was used. And the
ledger of its verification packets (fedmatch/protocol/packet.py): which candidates' packets
were released, the SHA-256 of each image and of the probe image the requester declared (so
that every verdict can be checked against them), and the candidates its verifiers rejected.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmatch.errors import AlreadyExists, NotFound, PermissionDenied
from fedmatch.he.engine import QueryLayout
from fedmatch.protocol.opening import OpeningKey
from fedmatch.protocol.packet import admit_packet_request
from fedmatch.protocol.wire import decode_handle

__all__ = ["HandleRegistry", "QueryRelease"]


@dataclass(frozen=True)
class QueryRelease:
    """What the node checks before releasing a query's hit details."""

    key: OpeningKey
    commitment: bytes
    categories: frozenset[str]
    sees_marked: bool


@dataclass
class _Query:
    requesting_state: str
    expires: float
    layout: QueryLayout | None  # None while the search is still running
    # Row ids in register order when the query ran. Enrolment replaces the node's array
    # rather than changing it, so pending queries share snapshots instead of copying.
    ids: npt.NDArray[np.int64]
    release: QueryRelease | None = None
    resolved: bool = False
    # The verification packets released: handle -> image SHA-256 ("" no image), the
    # declared probe image's SHA-256 (None before the first packet request), how many
    # packet requests were served, and the handles the requester's verifiers rejected.
    packets: dict[bytes, str] = field(default_factory=dict)
    probe_image: str | None = None
    packet_requests: int = 0
    rejected: set[bytes] = field(default_factory=set)


class HandleRegistry:
    """Keeps each pending query's layout and resolves its position handles to row ids."""

    def __init__(
        self,
        ttl_seconds: float = 3600.0,
        max_queries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_queries
        self._clock = clock
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, _Query] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._queries:
            qid, q = next(iter(self._queries.items()))
            if q.expires > now and len(self._queries) <= self._max:
                break
            del self._queries[qid]

    def reserve(self, query_id: str, requesting_state: str) -> None:
        """Hold ``query_id`` for a search about to run, refusing a reused one before any HE
        work (a concurrent duplicate finds the hold). Release it if the search fails."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if query_id in self._queries:
                raise AlreadyExists("this query id was already used at this node")
            empty = np.zeros(0, dtype=np.int64)
            self._queries[query_id] = _Query(requesting_state, now + self._ttl, None, empty)

    def release(self, query_id: str) -> None:
        """Drop the hold of a search that failed, so that the id may be used again."""
        with self._lock:
            q = self._queries.get(query_id)
            if q is not None and q.layout is None:
                del self._queries[query_id]

    def record(
        self,
        query_id: str,
        requesting_state: str,
        layout: QueryLayout,
        ids: npt.NDArray[np.int64],
        release: QueryRelease | None = None,
    ) -> None:
        with self._lock:
            now = self._clock()
            held = self._queries.get(query_id)
            if held is not None and (
                held.layout is not None or held.requesting_state != requesting_state
            ):
                raise AlreadyExists("this query id was already used at this node")
            self._queries[query_id] = _Query(
                requesting_state, now + self._ttl, layout, ids, release
            )
            self._queries.move_to_end(query_id)
            self._expire(now)

    def _pending(self, query_id: str, requesting_state: str) -> _Query:
        self._expire(self._clock())
        q = self._queries.get(query_id)
        if q is None or q.layout is None or q.requesting_state != requesting_state:
            raise NotFound("no search with this query id is pending at this node")
        return q

    def release_terms(self, query_id: str, requesting_state: str) -> QueryRelease:
        """The query's release terms, or PermissionDenied once its one resolve was used
        (or for a query searched without them)."""
        with self._lock:
            q = self._pending(query_id, requesting_state)
            if q.resolved:
                raise PermissionDenied("this query's hit details were already released")
            if q.release is None:
                raise PermissionDenied("this query cannot release hit details")
            return q.release

    def begin_packets(self, query_id: str, requesting_state: str, probe_image: str) -> None:
        """Before any work on a packet request: the query is pending, has requests left, and
        names the same probe image as its earlier packet requests (PermissionDenied). The
        request counts from here, whether or not packets are released."""
        with self._lock:
            q = self._pending(query_id, requesting_state)
            admit_packet_request(q.packet_requests, q.probe_image, probe_image)
            # Counted and fixed here, under the lock: concurrent requests can neither pass
            # the bound nor name two probe images.
            q.packet_requests += 1
            q.probe_image = probe_image

    def record_packets(
        self, query_id: str, probe_image: str, released: Mapping[bytes, str]
    ) -> None:
        """Packets were released for ``released`` (handle -> image SHA-256)."""
        with self._lock:
            q = self._queries.get(query_id)
            if q is not None:
                q.probe_image = probe_image
                q.packets.update(released)

    def evidence(self, query_id: str, requesting_state: str) -> tuple[str | None, dict[bytes, str]]:
        """The declared probe image (None: no packet was released) and each released
        packet's image SHA-256, by handle: what every verdict of the query must name."""
        with self._lock:
            q = self._pending(query_id, requesting_state)
            return q.probe_image, dict(q.packets)

    def reject(self, query_id: str, requesting_state: str, handles: Iterable[bytes]) -> int:
        """The requester's verifiers rejected ``handles``: their details are never released.
        Returns how many were not rejected before."""
        with self._lock:
            q = self._pending(query_id, requesting_state)
            new = set(handles) - q.rejected
            q.rejected |= new
            return len(new)

    def rejected(self, query_id: str, requesting_state: str) -> frozenset[bytes]:
        with self._lock:
            return frozenset(self._pending(query_id, requesting_state).rejected)

    def mark_resolved(self, query_id: str) -> None:
        """The query's one resolve is used: no further details for any of its handles."""
        with self._lock:
            q = self._queries.get(query_id)
            if q is not None:
                q.resolved = True

    def resolve(self, query_id: str, requesting_state: str, handle: bytes) -> int:
        block, position = decode_handle(handle)
        with self._lock:
            q = self._pending(query_id, requesting_state)
            assert q.layout is not None  # _pending refuses a query still running
            row = q.layout.row(block, position)
            if row is None:
                raise NotFound("handle does not name a record of this query")
            record_id = int(q.ids[row])
        if record_id < 0:
            raise NotFound("record no longer exists")
        return record_id

    def forget(self, record_ids: npt.NDArray[np.int64]) -> None:
        """Erased records: no pending query's handle resolves to them any more (their
        positions now name -1, "no record")."""
        with self._lock:
            for q in self._queries.values():
                gone = np.isin(q.ids, record_ids)
                if gone.any():
                    # A new array: the node's own array may be this very snapshot.
                    q.ids = np.where(gone, np.int64(-1), q.ids)
