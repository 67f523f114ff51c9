"""The request-metrics interceptor on a real gRPC server (all four RPC kinds), scraped from
the real /metrics listener and read back with prometheus_client's text parser."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fedmatch import errors
from fedmatch.errors import ConfigError, InvalidInput
from fedmatch.grpcutil.errors import translated
from fedmatch.grpcutil.metrics import (
    NO_CLASS_REASONS,
    RPC_TYPES,
    MetricsInterceptor,
    RpcMetrics,
    note_refusal,
)
from fedmatch.grpcutil.server import ServerLimits, start_server
from fedmatch.ops.metrics_http import MetricsConfig, MetricsServer, load_metrics_config

SERVICE = "fedmatch.test.Probe"
STATUS_NAMES = {c.name for c in grpc.StatusCode}


def _error_classes() -> set[str]:
    """Every FedmatchError subclass name defined anywhere (the closed set of reasons)."""
    found, todo = set(), [errors.FedmatchError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


REASONS = _error_classes() | set(NO_CLASS_REASONS)


def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """/metrics as {family: [(sample name, labels, value)]}, through the strict parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    hits = [
        v
        for name, have, v in families.get(family, [])
        if name == sample and all(have.get(k) == w for k, w in labels.items())
    ]
    return float(sum(hits))


def assert_closed_labels(families: dict[str, Any], methods: set[str]) -> None:
    """Every label value of every sample is from a closed set: no caller string."""
    allowed: dict[str, set[str]] = {
        "grpc_method": methods,
        "grpc_code": STATUS_NAMES,
        "grpc_type": set(RPC_TYPES),
        "reason": REASONS,
    }
    for samples in families.values():
        for _, labels, _ in samples:
            for key, got in labels.items():
                if key == "le":
                    float(got)  # a bucket bound, a number
                elif key == "grpc_service":
                    assert got.startswith(("fedmatch.", "grpc.health.v1")), got
                elif key in allowed:
                    assert got in allowed[key], (key, got)


class Probe:
    """Handlers of every kind; ``fail`` bytes make them refuse or crash."""

    @translated
    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"refuse":
            raise InvalidInput("refused for the test")
        if request == b"crash":
            raise RuntimeError("a library's message that may quote input: SECRET")
        return request

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from (request,) * 3

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"".join(requests)

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for r in requests:
            if r == b"stop":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stopped by the test")
            yield r


def test_interceptor_counts_times_and_classifies_every_rpc_kind() -> None:
    registry = CollectorRegistry()
    probe = Probe()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(probe.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(probe.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(probe.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(probe.bidi),
        },
    )
    server = start_server(
        lambda s: s.add_generic_rpc_handlers((handler,)),
        "127.0.0.1:0",
        ServerLimits(1 << 20, 1 << 20),
        None,
        [MetricsInterceptor(RpcMetrics(registry))],
    )
    listener = MetricsServer(registry, "127.0.0.1:0")
    channel = grpc.insecure_channel(server.address)
    try:
        unary = channel.unary_unary(f"/{SERVICE}/Unary", None, None)
        assert unary(b"a", timeout=10) == b"a"
        assert unary(b"b", timeout=10) == b"b"
        for bad, code in ((b"refuse", "INVALID_ARGUMENT"), (b"crash", "INTERNAL")):
            with pytest.raises(grpc.RpcError) as err:
                unary(bad, timeout=10)
            assert err.value.code().name == code
            assert "SECRET" not in (err.value.details() or "")
        assert (
            list(channel.unary_stream(f"/{SERVICE}/ServerStream", None, None)(b"s", timeout=10))
            == [b"s"] * 3
        )
        assert (
            channel.stream_unary(f"/{SERVICE}/ClientStream", None, None)(iter([b"x", b"y"]))
            == b"xy"
        )
        bidi = channel.stream_stream(f"/{SERVICE}/Bidi", None, None)
        assert list(bidi(iter([b"1", b"2"]), timeout=10)) == [b"1", b"2"]
        with pytest.raises(grpc.RpcError) as err:
            list(bidi(iter([b"1", b"stop"]), timeout=10))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as err:  # not registered: not counted
            channel.unary_unary(f"/{SERVICE}/Nope", None, None)(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        families = scrape(listener.port)
    finally:
        channel.close()
        listener.stop()
        server.stop(0)

    def handled(method: str, code: str) -> float:
        return value(families, "grpc_server_handled_total", grpc_method=method, grpc_code=code)

    assert handled("Unary", "OK") == 2
    assert handled("Unary", "INVALID_ARGUMENT") == 1
    assert handled("Unary", "INTERNAL") == 1
    assert handled("ServerStream", "OK") == 1
    assert handled("ClientStream", "OK") == 1
    assert handled("Bidi", "OK") == 1
    assert handled("Bidi", "FAILED_PRECONDITION") == 1
    assert value(families, "grpc_server_started_total", grpc_method="Unary") == 4
    kinds = {
        labels["grpc_method"]: labels["grpc_type"]
        for name, labels, _ in families["grpc_server_started"]
        if name == "grpc_server_started_total"
    }
    assert kinds == {
        "Unary": "unary",
        "ServerStream": "server_stream",
        "ClientStream": "client_stream",
        "Bidi": "bidi_stream",
    }
    assert "Nope" not in str(families)

    # Refusals by reason class: the error's class, never its message.
    def refused(code: str, reason: str) -> float:
        return value(families, "fedmatch_rpc_refusals_total", grpc_code=code, reason=reason)

    assert refused("INVALID_ARGUMENT", "InvalidInput") == 1
    assert refused("INTERNAL", "internal") == 1
    assert refused("FAILED_PRECONDITION", "other") == 1
    assert "SECRET" not in str(families) and "refused for the test" not in str(families)

    # The latency histogram moved: 4 unary observations, cumulative buckets ending in +Inf.
    buckets = [
        (float(labels["le"]), v)
        for name, labels, v in families["grpc_server_handling_seconds"]
        if name == "grpc_server_handling_seconds_bucket" and labels["grpc_method"] == "Unary"
    ]
    assert buckets[-1] == (float("inf"), 4)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert value(families, "grpc_server_handling_seconds_count", grpc_method="Unary") == 4
    assert value(families, "fedmatch_rpc_in_flight", grpc_method="Unary") == 0
    assert_closed_labels(families, {"Unary", "ServerStream", "ClientStream", "Bidi"})


def test_note_refusal_outside_a_call_does_nothing() -> None:
    note_refusal(InvalidInput("no call in progress"))  # must not raise nor leak anywhere


def test_metrics_table_is_checked_and_optional(tmp_path: Any) -> None:
    assert not load_metrics_config(None).enabled
    path = tmp_path / "party.toml"
    path.write_text('[metrics]\nlisten = "127.0.0.1:9464"\n')
    assert load_metrics_config(path) == MetricsConfig(listen="127.0.0.1:9464")
    for bad in ("9464", "host:", "127.0.0.1:99999", ":9464"):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            MetricsConfig(listen=bad)
    path.write_text("[metrics]\nport = 9464\n")
    with pytest.raises(ConfigError, match=r"metrics\.port: unknown key"):
        load_metrics_config(path)


def test_metrics_listener_refuses_a_taken_port() -> None:
    registry = CollectorRegistry()
    first = MetricsServer(registry, "127.0.0.1:0")
    try:
        with pytest.raises(ConfigError, match="could not bind"):
            MetricsServer(registry, f"127.0.0.1:{first.port}")
    finally:
        first.stop()


def test_fanout_outcomes_are_counted_per_configured_node_and_enum_only() -> None:
    from fedmatch.ops.metrics import FANOUT_OUTCOMES, FanoutMetrics
    from fedmatch.rpc.v1 import coordinator_pb2 as cpb

    registry = CollectorRegistry()
    fanout = FanoutMetrics(registry, ["IT", "FR"])
    response = cpb.LookupResponse(
        nodes=[
            cpb.NodeResult(member_state="IT", outcome=cpb.NODE_OUTCOME_OK, elapsed_ms=120.0),
            cpb.NodeResult(
                member_state="FR", outcome=cpb.NODE_OUTCOME_REFUSED, detail="free text: CASE-9"
            ),
            # Not a configured node (cannot happen; still never a label), and an enum
            # value this build does not know.
            cpb.NodeResult(member_state="ZZ-evil", outcome=99),  # type: ignore[arg-type]
        ]
    )
    fanout.observe("/fedmatch.rpc.v1.CoordinatorService/Lookup", response)
    fanout.observe("/fedmatch.rpc.v1.CoordinatorService/GetFederation", cpb.FederationInfo())
    calls = {
        (s.labels["member_state"], s.labels["outcome"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "fedmatch_fanout_calls_total"
    }
    assert calls == {("IT", "ok"): 1, ("FR", "refused"): 1, ("other", "unspecified"): 1}
    assert {outcome for _, outcome in calls} <= set(FANOUT_OUTCOMES)
    assert (
        registry.get_sample_value(
            "fedmatch_fanout_node_seconds_bucket", {"member_state": "IT", "le": "0.25"}
        )
        == 1
    )
