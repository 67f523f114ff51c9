"""Per-query opaque handles.

Each search gives every record a fresh random 16-byte handle that means something only at
this node and only for this query: never a row id or a reference number, so a requester
cannot link records across queries by handle. The mapping lives in memory for a bounded time
and count; an expired or unknown handle is simply not found.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmatch.errors import AlreadyExists, NotFound
from fedmatch.limits import HANDLE_BYTES

__all__ = ["HandleRegistry"]


@dataclass
class _Query:
    requesting_state: str
    expires: float
    records: dict[bytes, int]


class HandleRegistry:
    """Issues handles per query and resolves them back to row ids."""

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

    def issue(
        self, query_id: str, requesting_state: str, record_ids: npt.NDArray[np.int64]
    ) -> bytes:
        """Fresh handles for ``record_ids`` (in order), concatenated."""
        raw = os.urandom(HANDLE_BYTES * len(record_ids))
        handles = [raw[i : i + HANDLE_BYTES] for i in range(0, len(raw), HANDLE_BYTES)]
        mapping = dict(zip(handles, (int(r) for r in record_ids), strict=True))
        with self._lock:
            now = self._clock()
            self._expire(now)
            if query_id in self._queries:
                raise AlreadyExists("this query id was already used at this node")
            self._queries[query_id] = _Query(requesting_state, now + self._ttl, mapping)
            self._expire(now)
        return raw

    def resolve(self, query_id: str, requesting_state: str, handle: bytes) -> int:
        with self._lock:
            self._expire(self._clock())
            q = self._queries.get(query_id)
            if q is None or q.requesting_state != requesting_state:
                raise NotFound("no search with this query id is pending at this node")
            record = q.records.get(handle)
        if record is None:
            raise NotFound("handle does not belong to this query")
        return record
