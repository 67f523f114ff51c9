"""Issue 21, attack 1: idle streams froze a server. Each peer's share of a server (calls and
open streams per member state), health Watch streams that hold no thread and are only for
the coordinator, over real gRPC servers on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.grpcutil.auth import AccessRule, AuthorizingInterceptor
from fedmatch.grpcutil.metrics import MetricsInterceptor, RpcMetrics
from fedmatch.grpcutil.server import RunningServer, ServerLimits, make_channel, start_server
from fedmatch.grpcutil.shares import PeerShares, Shares
from fedmatch.pki.names import dns_name
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from tests.federation import DIM, federation, header, security

_WATCH = health_pb2.HealthCheckRequest()


def _watches(channel: grpc.Channel, n: int) -> list[Any]:
    """``n`` health Watch streams opened and never read (the attack's idle streams)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return [stub.Watch(_WATCH) for _ in range(n)]


def _code(stream: Any) -> grpc.StatusCode | None:
    """The status a stream ended with, or None while it is still open."""
    try:
        next(stream)
    except grpc.RpcError as err:
        return err.code()
    return None


def test_idle_watch_streams_do_not_delay_another_peers_lookup(tmp_path: Path) -> None:
    """Sixteen idle Watch streams, opened with a hit verifier's certificate (any
    federation certificate did) at the coordinator and at a node, made every lookup run
    into its deadline. A verifier may not watch: refused at once, no thread held."""
    with federation(tmp_path, records=50) as fed:
        attacker = security(tmp_path, "verifier-anna-DE")
        opened: list[Any] = []
        channels = []
        for address, name in (
            (fed.coordinator_server.address, dns_name("coordinator", "EU")),
            (fed.servers["IT"].address, dns_name("node", "IT")),
        ):
            channel = make_channel(
                address, MAX_RECEIVE_BYTES, MAX_RECEIVE_BYTES, attacker.channel_credentials(), name
            )
            channels.append(channel)
            opened += _watches(channel, 16)
        try:
            started = time.monotonic()
            report = fed.requester("FR").lookup(
                unit_vectors(np.random.default_rng(3), 1, DIM)[0], header("FR")
            )
            took = time.monotonic() - started
            assert all(n.outcome == "ok" for n in report.nodes), report.nodes
            assert took < 30.0  # the attack made it run into the 40 s deadline
            assert {_code(s) for s in opened} == {grpc.StatusCode.PERMISSION_DENIED}
        finally:
            for channel in channels:
                channel.close()


def test_the_coordinators_watch_streams_hold_no_thread_and_are_bounded(tmp_path: Path) -> None:
    """The coordinator may watch a node: its streams hold no worker thread (a node with
    one worker still answers), and beyond its share of open streams the next is refused
    with RESOURCE_EXHAUSTED while the node keeps serving."""
    with federation(tmp_path, records=50) as fed:
        coordinator = security(tmp_path, "coordinator")
        channel = make_channel(
            fed.servers["IT"].address,
            MAX_RECEIVE_BYTES,
            MAX_RECEIVE_BYTES,
            coordinator.channel_credentials(),
            dns_name("node", "IT"),
        )
        try:
            # Opened side by side: which two the node keeps is the order they arrive in.
            codes = [_code(s) for s in _watches(channel, 16)]
            assert codes.count(None) == 2  # open, answering SERVING
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 14
            report = fed.requester("DE").lookup(
                unit_vectors(np.random.default_rng(4), 1, DIM)[0], header("DE")
            )
            assert all(n.outcome == "ok" for n in report.nodes)
        finally:
            channel.close()


# -- one server, two member states: shares of calls --------------------------------------


class _Identity:
    def __init__(self, role: str, member_state: str | None) -> None:
        self.role, self.member_state = role, member_state


def _identify(context: grpc.ServicerContext) -> _Identity:
    """The test server's stand-in for certificate verification: the caller names its
    scope in metadata (what a real server reads from the verified client certificate)."""
    meta = dict(context.invocation_metadata())
    role, _, state = str(meta["who"]).partition("/")
    return _Identity(role, state or None)


_SLOW = "/test.Slow/Hold"


@pytest.fixture
def slow_server() -> Iterator[tuple[RunningServer, threading.Event, CollectorRegistry]]:
    """A real gRPC server of two workers whose one method holds its thread until
    released, behind the real metrics and authorizing interceptors with shares of one
    call per state."""
    release = threading.Event()

    def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(30)
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Hold": grpc.unary_unary_rpc_method_handler(hold)}
    )
    rules = {
        _SLOW: AccessRule(frozenset({"operator"})),
        "/grpc.health.v1.Health/Check": AccessRule(frozenset({"operator"})),
        "/grpc.health.v1.Health/Watch": AccessRule(frozenset({"coordinator"})),
    }
    registry = CollectorRegistry()
    shares = PeerShares(Shares(calls=1, streams=1, unbounded=frozenset()))
    server = start_server(
        lambda s: s.add_generic_rpc_handlers((handler,)),
        "127.0.0.1:0",
        ServerLimits(1 << 20, 1 << 20, max_workers=2),
        None,
        [
            MetricsInterceptor(RpcMetrics(registry)),
            AuthorizingInterceptor(rules, _identify, None, shares),
        ],
    )
    try:
        yield server, release, registry
    finally:
        release.set()
        server.stop(0)


def _call(channel: grpc.Channel, who: str, timeout: float = 10.0) -> Any:
    hold = channel.unary_unary(_SLOW, request_serializer=None, response_deserializer=None)
    return hold.future(b"x", timeout=timeout, metadata=(("who", who),))


def test_a_state_beyond_its_share_is_refused_while_another_is_served(
    slow_server: tuple[RunningServer, threading.Event, CollectorRegistry],
) -> None:
    server, release, registry = slow_server
    with grpc.insecure_channel(server.address) as channel:
        held = _call(channel, "operator/DE")
        time.sleep(0.3)  # DE's first call holds a worker
        with pytest.raises(grpc.RpcError) as refused:
            _call(channel, "operator/DE").result()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "DE already holds 1 concurrent call" in (refused.value.details() or "")
        # FR takes the other worker: served as soon as the method returns.
        other = _call(channel, "operator/FR")
        release.set()
        assert other.result() == b"x" and held.result() == b"x"
        # DE's share is back once its call finished.
        assert _call(channel, "operator/DE").result() == b"x"
    count = registry.get_sample_value(
        "fedmatch_rpc_refusals_total",
        {
            "grpc_service": "test.Slow",
            "grpc_method": "Hold",
            "grpc_code": "RESOURCE_EXHAUSTED",
            "reason": "PeerShareExceeded",
        },
    )
    assert count == 1.0


def test_an_open_watch_stream_holds_no_worker_thread(
    slow_server: tuple[RunningServer, threading.Event, CollectorRegistry],
) -> None:
    """Two workers: one held by a slow call, and a Watch stream open. Interceptors that
    re-wrapped the non-blocking Watch made each open stream hold a thread; here a Check
    is still answered, and a second stream beyond the share is refused."""
    server, release, _ = slow_server
    with grpc.insecure_channel(server.address) as channel:
        held = _call(channel, "operator/DE")
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(_WATCH, metadata=(("who", "coordinator/"),))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        check = stub.Check(_WATCH, timeout=5, metadata=(("who", "operator/FR"),))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        second = stub.Watch(_WATCH, metadata=(("who", "coordinator/"),))
        assert _code(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A verifier (or an operator) may not watch at all.
        refused = stub.Watch(_WATCH, metadata=(("who", "operator/FR"),))
        assert _code(refused) == grpc.StatusCode.PERMISSION_DENIED
        watch.cancel()
        release.set()
        assert held.result() == b"x"
    # The cancelled stream gave its share back (the callback ran when gRPC ended it).
    deadline = time.monotonic() + 5
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            again = stub.Watch(_WATCH, metadata=(("who", "coordinator/"),))
            try:
                assert next(again).status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the stream's share was never released"
                time.sleep(0.1)
        again.cancel()
