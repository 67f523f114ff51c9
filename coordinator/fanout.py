"""Parallel calls to nodes with a per-node deadline and an explicit outcome per node.

A node that is down, slow or refuses is reported as such: never as "no match". The calls
run concurrently as gRPC futures, so one slow node costs its own deadline, not the sum.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

__all__ = ["NodeCall", "NodeOutcome", "fan_out"]


class NodeOutcome(enum.StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    REFUSED = "refused"


@dataclass(frozen=True)
class NodeCall:
    member_state: str
    outcome: NodeOutcome
    detail: str
    elapsed_ms: float
    bytes_sent: int
    bytes_received: int
    response: Any = None


def _outcome(code: grpc.StatusCode) -> NodeOutcome:
    if code == grpc.StatusCode.UNAVAILABLE:
        return NodeOutcome.UNREACHABLE
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NodeOutcome.DEADLINE_EXCEEDED
    return NodeOutcome.REFUSED


def fan_out(
    calls: Mapping[str, tuple[grpc.UnaryUnaryMultiCallable[Any, Any], Message]],
    timeout: float,
) -> dict[str, NodeCall]:
    """Start ``method.future(request, timeout=...)`` for every state, gather every result."""
    started = time.perf_counter()
    futures = {
        state: (method.future(request, timeout=timeout), request.ByteSize())
        for state, (method, request) in calls.items()
    }
    out: dict[str, NodeCall] = {}
    for state, (future, sent) in futures.items():
        try:
            response = future.result()
        except grpc.RpcError as err:
            code = err.code()
            detail = f"{code.name}: {err.details() or ''}".strip()
            out[state] = NodeCall(state, _outcome(code), detail[:300], _ms(started), sent, 0, None)
            continue
        out[state] = NodeCall(
            state, NodeOutcome.OK, "", _ms(started), sent, response.ByteSize(), response
        )
    return out


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)
