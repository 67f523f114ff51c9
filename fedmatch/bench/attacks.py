"""What a hostile member state throws at the federation in ``fedmatch bench flood``.

Each attack is a loop that runs until a deadline and tallies every attempt by the gRPC
status it ended with (:class:`Tally`). The attacker holds valid federation certificates of
its own state (operator workstation, hit verifier, node, officer): that is what a member
state acting in bad faith has. The attacks, by the name the benchmark reports them under:

* ``watch_streams``: health ``Watch`` streams, opened and never read, at the coordinator
  and at every node, with each of the state's certificates;
* ``oversize``: one message a byte beyond the servers' receive bound
  (:data:`fedmatch.protocol.limits.MAX_RECEIVE_BYTES`) at the coordinator and the nodes;
* ``malformed``: bytes that are no protobuf message, sent raw (no serializer) to the
  coordinator's ``Lookup`` and the nodes' ``Search`` and ``Enroll``;
* ``no_client_cert``: TLS without a client certificate, a new connection each time;
* ``plaintext``: plaintext HTTP/2 to the TLS ports, a new connection each time;
* ``key_registrations``: fresh, valid key bundles through the coordinator, as fast as the
  state's quota lets them through (and beyond);
* ``lookups``: signed lookups through the coordinator from more threads than the state's
  share of concurrent calls there.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.domain import Purpose
from fedmatch.errors import FedmatchError
from fedmatch.grpcutil.server import make_channel
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.wire import header_to_pb
from fedmatch.rpc.v1 import common_pb2, coordinator_pb2_grpc

__all__ = ["ATTACKS", "Tally", "Target", "key_bundles"]

_NODE = "/fedmatch.rpc.v1.NodeService/"
_COORDINATOR = "/fedmatch.rpc.v1.CoordinatorService/"
_WATCH = health_pb2.HealthCheckRequest()
# A length-delimited field 1 that claims 100 bytes where 10 follow: no protobuf parser
# accepts it, whatever the message type.
MALFORMED = b"\x0a\x64" + b"x" * 10
# Deadlines of single attempts: a refusal is immediate, so anything slower is a finding.
_QUICK_S = 10.0
_SLOW_S = 120.0


@dataclass
class Tally:
    """Attempts of one attack and how each ended (thread-safe)."""

    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    # Why RESOURCE_EXHAUSTED: the state's share of calls, its quota, the message size.
    reasons: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self) -> None:
        self.note("OK", "")

    def error(self, err: grpc.RpcError) -> None:
        self.note(err.code().name, err.details() or "")

    def note(self, code: str, details: str) -> None:
        with self._lock:
            self.attempts += 1
            self.outcomes[code] += 1
            if code == "RESOURCE_EXHAUSTED":
                self.reasons[_reason(details)] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "attempts": self.attempts,
                "outcomes": dict(sorted(self.outcomes.items())),
                "resource_exhausted_by": dict(sorted(self.reasons.items())),
            }


def _reason(details: str) -> str:
    text = details.lower()
    for word, reason in (("share", "share"), ("quota", "quota"), ("larger than max", "size")):
        if word in text:
            return reason
    return "other"


@dataclass
class Target:
    """Everything the attacks aim at and hold: server addresses and the DNS names their
    certificates carry, the attacker's credentials, and its key material."""

    coordinator: str
    nodes: dict[str, str]  # member state -> address
    coordinator_name: str
    node_names: dict[str, str]
    root_pem: bytes
    # The attacker's mTLS credentials, one per certificate it holds (operator first).
    credentials: list[grpc.ChannelCredentials]
    requester: Any  # a fedmatch.requester.Requester of the hostile state
    bundles: list[common_pb2.HEKeyBundle]  # public halves of its key pairs
    dimension: int
    until: float
    _channels: list[grpc.Channel] = field(default_factory=list)

    def servers(self) -> list[tuple[str, str]]:
        """(address, certificate name) of the coordinator and of every node."""
        return [(self.coordinator, self.coordinator_name)] + [
            (a, self.node_names[s]) for s, a in sorted(self.nodes.items())
        ]

    def channel(
        self, address: str, name: str, credentials: grpc.ChannelCredentials, send: int
    ) -> grpc.Channel:
        channel = make_channel(address, MAX_RECEIVE_BYTES, send, credentials, name)
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def timeout(self, slow: bool = False) -> float:
        """An attempt's deadline: a refusal is immediate, so a quick call gets a few
        seconds wherever it starts (one started as the flood ends may finish after it);
        a slow one (megabytes to send, a lookup to answer) what is left of the flood."""
        if not slow:
            return _QUICK_S
        return min(_SLOW_S, max(_QUICK_S, self.until - time.monotonic()))

    def running(self) -> bool:
        return time.monotonic() < self.until


def _attempt(tally: Tally, call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as err:
        tally.error(err)
    else:
        tally.ok()


def watch_streams(target: Target, tally: Tally, batch: int = 16) -> None:
    channels = [
        target.channel(address, name, cred, MAX_RECEIVE_BYTES)
        for address, name in target.servers()
        for cred in target.credentials
    ]
    while target.running():
        for channel in channels:
            stub = health_pb2_grpc.HealthStub(channel)
            streams = [stub.Watch(_WATCH, timeout=target.timeout()) for _ in range(batch)]
            for stream in streams:
                # The first answer: a refusal, or SERVING from a stream left open (cancelled
                # once the batch is counted, as its peer's share would otherwise stay held).
                _attempt(tally, next, stream)
            for stream in streams:
                stream.cancel()


def oversize(target: Target, tally: Tally) -> None:
    body = bytes(MAX_RECEIVE_BYTES + 1)
    calls = [
        target.channel(address, name, target.credentials[0], 2 * len(body)).unary_unary(
            (_COORDINATOR if address == target.coordinator else _NODE) + "RegisterKeys",
            request_serializer=None,
            response_deserializer=None,
        )
        for address, name in target.servers()
    ]
    for call in itertools.cycle(calls):
        if not target.running():
            return
        _attempt(tally, call, body, timeout=target.timeout(slow=True))


def malformed(target: Target, tally: Tally) -> None:
    calls = []
    for address, name in target.servers():
        channel = target.channel(address, name, target.credentials[0], MAX_RECEIVE_BYTES)
        methods = (
            [_COORDINATOR + "Lookup"]
            if address == target.coordinator
            else [_NODE + "Search", _NODE + "Enroll"]
        )
        calls += [
            channel.unary_unary(m, request_serializer=None, response_deserializer=None)
            for m in methods
        ]
    for call in itertools.cycle(calls):
        if not target.running():
            return
        _attempt(tally, call, MALFORMED, timeout=target.timeout())


def _fresh_connections(target: Target, tally: Tally, tls: bool) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=target.root_pem)
    for address, name in itertools.cycle(target.servers()):
        if not target.running():
            return
        # A channel of its own, sharing no connection with any other: every attempt is a
        # new TCP connection and (with TLS) a new handshake.
        options = [("grpc.use_local_subchannel_pool", 1)]
        if tls:
            channel = grpc.secure_channel(
                address, credentials, [*options, ("grpc.ssl_target_name_override", name)]
            )
        else:
            channel = grpc.insecure_channel(address, options)
        try:
            check = health_pb2_grpc.HealthStub(channel).Check
            _attempt(tally, check, _WATCH, timeout=target.timeout())
        finally:
            channel.close()


def no_client_cert(target: Target, tally: Tally) -> None:
    _fresh_connections(target, tally, tls=True)


def plaintext(target: Target, tally: Tally) -> None:
    _fresh_connections(target, tally, tls=False)


def key_bundles(parts: list[common_pb2.HEKeyBundle], start: int = 0) -> Iterator[Any]:
    """Valid key bundles, each with another key id, from few key pairs: every mix of one
    pair's public key, another's rotation keys and a third's relinearization keys is
    accepted by the nodes' checks (which cannot tell the parts belong together) and has
    a digest of its own, so n pairs make n**3 fresh bundles. Then they start over."""
    mixes = list(itertools.product(range(len(parts)), repeat=3))
    for n in itertools.count(start):
        p, g, r = mixes[n % len(mixes)]
        yield common_pb2.HEKeyBundle(
            he_param_set=parts[p].he_param_set,
            parms=parts[p].parms,
            public_key=parts[p].public_key,
            galois_keys=parts[g].galois_keys,
            relin_keys=parts[r].relin_keys,
        )


def key_registrations(target: Target, tally: Tally, bundles: Iterator[Any]) -> None:
    """``bundles`` is shared by this flooder's threads (a generator is not: hence the
    lock) so that no two send the same one."""
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(
        target.channel(
            target.coordinator, target.coordinator_name, target.credentials[0], 2**31 - 1
        )
    )
    requester = target.requester
    lock = threading.Lock()
    while target.running():
        with lock:
            bundle = next(bundles)
        header = requester.header(Purpose.ASYLUM_DUBLIN, "flood", "FLOOD-KEYS")
        request = common_pb2.RegisterKeysRequest(header=header_to_pb(header), key_bundle=bundle)
        _attempt(tally, stub.RegisterKeys, request, timeout=target.timeout(slow=True))


def lookups(target: Target, tally: Tally, nodes: Counter[str], seed: int) -> None:
    """Signed lookups of random probes, one after another (``nodes`` tallies how each
    node answered the ones the coordinator took)."""
    rng = np.random.default_rng(seed)
    requester = target.requester
    while target.running():
        vec = unit_vectors(rng, 1, target.dimension)[0]
        header = requester.header(Purpose.ASYLUM_DUBLIN, "flood", "FLOOD-LOOKUP")
        try:
            report = requester.lookup(vec, header, timeout=target.timeout(slow=True))
        except grpc.RpcError as err:
            tally.error(err)
            continue
        except FedmatchError as exc:  # the requester's own checks of an answer
            tally.note(type(exc).__name__, str(exc))
            continue
        tally.ok()
        nodes.update(n.outcome for n in report.nodes)


ATTACKS = (
    "watch_streams",
    "oversize",
    "malformed",
    "no_client_cert",
    "plaintext",
    "key_registrations",
    "lookups",
)
