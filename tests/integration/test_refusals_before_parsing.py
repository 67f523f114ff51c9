"""Issue 21 (the flood benchmark's finding): a request is parsed only once its caller is
admitted. gRPC parsed every request on its one dispatching thread before any access rule,
so a member state's certificate that may not call a method could still make a server parse
37 MB bodies (holding up every other call's dispatch) and log a traceback for each body that
did not parse. Real federation servers over mutual TLS."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedmatch.demo.synthetic import unit_vectors
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from tests.federation import DIM, federation, header, security

_LOOKUP = "/fedmatch.rpc.v1.CoordinatorService/Lookup"
_SEARCH = "/fedmatch.rpc.v1.NodeService/Search"
# A length-delimited field that claims 100 bytes where 10 follow: parses as no message.
_MALFORMED = b"\x0a\x64" + b"x" * 10


def _raw(channel: grpc.Channel, method: str, body: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        call(body, timeout=30)
    return err.value.code()


def test_bodies_of_callers_a_rule_refuses_are_never_parsed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with federation(tmp_path, records=50) as fed:
        # A hit verifier of DE may call neither the coordinator's Lookup nor a node's
        # Search; an operator of DE may call Lookup (its body is then parsed, and refused
        # as gRPC refuses a body that does not parse).
        verifier = security(tmp_path, "verifier-anna-DE").channel_credentials()
        operator = security(tmp_path, "operator-DE").channel_credentials()
        big = bytes(MAX_RECEIVE_BYTES - 1024)  # within the size bound, not a message
        channels = [
            make_channel(address, MAX_RECEIVE_BYTES, MAX_RECEIVE_BYTES, creds, name)
            for address, name, creds in (
                (fed.coordinator_server.address, dns_name("coordinator", "eu"), verifier),
                (fed.servers["IT"].address, dns_name("node", "IT"), verifier),
                (fed.coordinator_server.address, dns_name("coordinator", "eu"), operator),
            )
        ]
        try:
            with caplog.at_level(logging.DEBUG):
                coordinator, node, admitted = channels
                # Refused by the access rule, unparsed (they were INTERNAL before).
                assert _raw(coordinator, _LOOKUP, _MALFORMED) == grpc.StatusCode.PERMISSION_DENIED
                assert _raw(node, _SEARCH, _MALFORMED) == grpc.StatusCode.PERMISSION_DENIED
                assert _raw(coordinator, _LOOKUP, big) == grpc.StatusCode.PERMISSION_DENIED
                # Admitted: the body is parsed, and refused as before.
                assert _raw(admitted, _LOOKUP, _MALFORMED) == grpc.StatusCode.INTERNAL
                assert _raw(admitted, _LOOKUP, big) == grpc.StatusCode.INTERNAL
            # No traceback for a body that does not parse (one per request under a flood).
            assert not [r for r in caplog.records if "deserializing" in r.getMessage()]
            report = fed.requester("FR").lookup(
                unit_vectors(np.random.default_rng(5), 1, DIM)[0], header("FR")
            )
            assert all(n.outcome == "ok" for n in report.nodes)
        finally:
            for channel in channels:
                channel.close()
