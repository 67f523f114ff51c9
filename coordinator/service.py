"""The coordinator's plain-Python service: authorize, fan out, gather, decide.

The coordinator relays the encrypted probe and results as opaque bytes (it forwards the
protobuf payloads without decoding them), never holds a secret key (a lookup carrying one is
refused before anything is sent), and sees hit metadata only for handles the requester chose
to resolve. It keeps a short-lived record of each lookup so that a resolve can only ask the
nodes that answered that lookup, for that requester.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from coordinator.config import CoordinatorConfig
from coordinator.dublin import Decision, decide
from coordinator.fanout import NodeCall, NodeOutcome, fan_out
from fedmatch.domain import EncryptedProbe, HitDetail, QueryHeader, check_member_state
from fedmatch.epochs import EpochTable
from fedmatch.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from fedmatch.grpcutil.server import make_channel
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.limits import (
    HANDLE_BYTES,
    MAX_HANDLES_PER_REQUEST,
    MAX_NODE_RESPONSE_BYTES,
    MAX_RECEIVE_BYTES,
)
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2, node_pb2, node_pb2_grpc
from fedmatch.wire import header_to_pb, hit_from_pb, key_bundle_from_pb, probe_to_pb

__all__ = ["CoordinatorService", "Resolution"]

log = logging.getLogger("fedmatch.coordinator")

# Lookups kept for a later resolve; at ~10,000 a day federation-wide (DOMAIN.md section 8)
# this holds more than a day's traffic.
MAX_PENDING_LOOKUPS = 20_000


@dataclass
class _Lookup:
    requesting_state: str
    expires: float
    outcomes: dict[str, NodeOutcome]


@dataclass(frozen=True)
class Resolution:
    decision: Decision
    hits: tuple[HitDetail, ...]
    calls: tuple[NodeCall, ...]
    complete: bool


class CoordinatorService:
    def __init__(
        self, config: CoordinatorConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._stubs: dict[str, node_pb2_grpc.NodeServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        for entry in config.nodes:
            channel = make_channel(entry.address, MAX_NODE_RESPONSE_BYTES, MAX_RECEIVE_BYTES)
            self._channels.append(channel)
            self._stubs[entry.member_state] = node_pb2_grpc.NodeServiceStub(channel)
        self._lock = threading.Lock()
        self._lookups: OrderedDict[str, _Lookup] = OrderedDict()
        # Key ids of registered epochs, with the state that registered them.
        self._keys: EpochTable[str] = EpochTable(config.key_epoch_seconds, capacity=4096)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def member_states(self) -> list[str]:
        return sorted(self._stubs)

    def _authorize(self, header: QueryHeader) -> None:
        if header.requesting_state not in self._stubs:
            raise PermissionDenied(
                f"member state {header.requesting_state} has no node in this federation"
            )

    def _timeout(self, time_remaining: float | None) -> float:
        timeout = self.config.node_deadline_seconds
        if time_remaining is not None:
            # Leave the coordinator time to gather and answer within its caller's deadline.
            timeout = min(timeout, max(0.05, time_remaining * 0.9 - 0.05))
        return timeout

    def register_keys(
        self,
        header: QueryHeader,
        request: common_pb2.RegisterKeysRequest,
        time_remaining: float | None,
    ) -> tuple[str, float, list[NodeCall]]:
        """Relay a key registration to every node but the requester's own. The coordinator
        keeps only the key id (to refuse unknown ids before a fan-out), never the keys."""
        self._authorize(header)
        if request.key_bundle.secret_key:
            raise InvalidInput("key bundle carries a secret key; refused (send public material)")
        key_id = key_bundle_from_pb(request.key_bundle).digest()
        live = self._keys.check_registrable(key_id)
        if live is not None and self._keys.get(key_id) != header.requesting_state:
            raise PermissionDenied("key id was registered by another member state")
        forwarded = common_pb2.RegisterKeysRequest(
            header=header_to_pb(header), key_bundle=request.key_bundle
        )
        targets = {
            state: (stub.RegisterKeys, forwarded)
            for state, stub in self._stubs.items()
            if state != header.requesting_state
        }
        calls = fan_out(targets, self._timeout(time_remaining))
        if not any(c.outcome is NodeOutcome.OK for c in calls.values()):
            raise PreconditionFailed("no node accepted the key material")
        expires = self._keys.register(key_id, header.requesting_state)
        log.info(
            "keys registered key=%s from=%s outcomes=%s",
            key_id[:16],
            header.requesting_state,
            ",".join(f"{s}:{c.outcome.value}" for s, c in sorted(calls.items())),
        )
        return key_id, expires, [calls[s] for s in sorted(calls)]

    def lookup(
        self,
        header: QueryHeader,
        probe: EncryptedProbe,
        time_remaining: float | None,
    ) -> list[NodeCall]:
        self._authorize(header)
        if probe.model_id != self.config.model_id:
            raise PreconditionFailed(
                f"probe from model {probe.model_id!r}; the federation uses {self.config.model_id!r}"
            )
        if probe.dimension != self.config.dimension:
            raise InvalidInput(f"probe dimension must be {self.config.dimension}")
        if self._keys.get(probe.key_id) != header.requesting_state:
            raise PermissionDenied("key id was registered by another member state")
        self._start_lookup(header)
        search = node_pb2.SearchRequest(
            header=header_to_pb(header),
            probe=probe_to_pb(probe),
            threshold_version=self.config.threshold_version,
        )
        targets = {
            state: (stub.Search, search)
            for state, stub in self._stubs.items()
            if state != header.requesting_state
        }
        calls = fan_out(targets, self._timeout(time_remaining))
        with self._lock:
            record = self._lookups.get(header.query_id)
            if record is not None:  # (evicted meanwhile only under a flood of lookups)
                record.outcomes = {s: c.outcome for s, c in calls.items()}
        log.info(
            "lookup query=%s from=%s purpose=%s outcomes=%s",
            header.query_id,
            header.requesting_state,
            header.purpose.value,
            ",".join(f"{s}:{c.outcome.value}" for s, c in sorted(calls.items())),
        )
        return [calls[s] for s in sorted(calls)]

    def _start_lookup(self, header: QueryHeader) -> None:
        now = self._clock()
        with self._lock:
            # Oldest first: drop expired lookups, and the oldest beyond the bound, so a flood
            # of lookups cannot grow this table without limit.
            while self._lookups:
                qid, rec = next(iter(self._lookups.items()))
                if rec.expires > now and len(self._lookups) < MAX_PENDING_LOOKUPS:
                    break
                del self._lookups[qid]
            if header.query_id in self._lookups:
                raise AlreadyExists("this query id was already used")
            self._lookups[header.query_id] = _Lookup(
                header.requesting_state, now + self.config.lookup_ttl_seconds, {}
            )

    def resolve(
        self,
        header: QueryHeader,
        application_date: dt.date,
        hits: Sequence[tuple[str, bytes]],
        time_remaining: float | None,
    ) -> Resolution:
        self._authorize(header)
        with self._lock:
            rec = self._lookups.get(header.query_id)
        if rec is None or rec.expires <= self._clock():
            raise NotFound("no lookup with this query id is pending")
        if rec.requesting_state != header.requesting_state:
            raise NotFound("no lookup with this query id is pending")
        if len(hits) > MAX_HANDLES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_HANDLES_PER_REQUEST} hits per resolve")
        by_state: dict[str, list[bytes]] = defaultdict(list)
        for state, handle in hits:
            check_member_state(state, "hits.member_state")
            if rec.outcomes.get(state) != NodeOutcome.OK:
                raise InvalidInput(f"hits name {state}, which did not answer this lookup")
            if len(handle) != HANDLE_BYTES:
                raise InvalidInput(f"a handle is {HANDLE_BYTES} bytes")
            by_state[state].append(handle)
        targets = {
            state: (
                self._stubs[state].GetHitDetails,
                node_pb2.HitDetailsRequest(header=header_to_pb(header), handles=handles),
            )
            for state, handles in by_state.items()
        }
        calls = fan_out(targets, self._timeout(time_remaining))
        details: list[HitDetail] = []
        for state, call in calls.items():
            if call.outcome is NodeOutcome.OK:
                resp: node_pb2.HitDetailsResponse = call.response
                for h in resp.hits:
                    detail = hit_from_pb(h)
                    if detail.member_state != state:
                        # A node may only speak for its own register.
                        raise PreconditionFailed(f"node {state} answered for another state")
                    details.append(detail)
        complete = all(o is NodeOutcome.OK for o in rec.outcomes.values()) and all(
            c.outcome is NodeOutcome.OK for c in calls.values()
        )
        decision = decide(header.requesting_state, application_date, details)
        log.info(
            "resolve query=%s from=%s hits=%d rule=%s responsible=%s complete=%s",
            header.query_id,
            header.requesting_state,
            len(details),
            decision.rule.value,
            decision.responsible_state or "-",
            complete,
        )
        return Resolution(decision, tuple(details), tuple(calls.values()), complete)

    def federation_info(self) -> coordinator_pb2.FederationInfo:
        return coordinator_pb2.FederationInfo(
            threshold=self.config.threshold,
            threshold_version=self.config.threshold_version,
            he_param_set=DEFAULT_PARAM_SET.name,
            member_states=self.member_states(),
            model_id=self.config.model_id,
            dimension=self.config.dimension,
        )
