"""What each party learns.

- The node servicer receives ciphertext and public material only: no float field carries
  the probe, the key bundle has no secret key, the probe bytes load as a SEAL ciphertext that
  only the requester's secret key opens, and the same probe encrypts differently each time.
- The coordinator relays the same opaque bytes and never holds a secret key.
- Logs of node and coordinator hold no template values, scores or key material.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tenseal.sealapi as seal
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category
from fedmatch.grpcutil.server import ServerLimits, start_server
from fedmatch.he import sealio, uniform
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.protocol.limits import MAX_NODE_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, verdict_to_pb
from fedmatch.rpc.v1 import audit_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc
from node.config import NodeConfig
from node.service import NodeService
from node.servicer import NODE_RULES, NodeServicer, WitnessServicer
from node.store import RecordStore
from tests.federation import (
    DIM,
    MODEL,
    TODAY,
    confirmations,
    enrol,
    federation,
    gate,
    header,
    hit_verified,
    node_audit,
    node_entry,
    security,
    shared_keys,
    signed_resolve,
)


class RecordingServicer(NodeServicer):
    """The real servicer, keeping a copy of every request exactly as it arrived."""

    def __init__(self, service: NodeService) -> None:
        super().__init__(service)
        self.seen: list[node_pb2.SearchRequest] = []
        self.registrations: list[common_pb2.RegisterKeysRequest] = []

    def RegisterKeys(
        self, request: common_pb2.RegisterKeysRequest, context: grpc.ServicerContext
    ) -> Any:
        copy = common_pb2.RegisterKeysRequest()
        copy.CopyFrom(request)
        self.registrations.append(copy)
        return super().RegisterKeys(request, context)

    def Search(self, request: node_pb2.SearchRequest, context: grpc.ServicerContext) -> Any:
        copy = node_pb2.SearchRequest()
        copy.CopyFrom(request)
        self.seen.append(copy)
        return super().Search(request, context)


def _float_fields(msg: Message) -> list[str]:
    """Names of every float/double field that is set anywhere in ``msg``."""
    found = []
    for field, value in msg.ListFields():
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            found.append(field.full_name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            values = value if field.is_repeated else [value]
            for v in values:
                found.extend(_float_fields(v))
    return found


def test_node_receives_only_ciphertext_and_public_material(tmp_path: Path) -> None:
    db = tmp_path / "NL.sqlite"
    store = RecordStore(db, "NL", DIM, MODEL)
    audit = node_audit(tmp_path / "fed", "NL")
    node_gate = gate(tmp_path / "fed", "node-NL")
    service = NodeService(
        NodeConfig(member_state="NL", database=db, dimension=DIM, model_id=MODEL, search_workers=1),
        store,
        audit,
        node_gate,
    )
    rng = np.random.default_rng(21)
    person = unit_vectors(rng, 1, DIM)[0]
    enrol(service, capture(person, rng, 0.9), "NL-1", Category.APPLICANT, dt.date(2026, 4, 4))
    recorder = RecordingServicer(service)
    limits = ServerLimits(MAX_RECEIVE_BYTES, MAX_NODE_RESPONSE_BYTES)
    witness = WitnessServicer(service)  # the node witnesses the coordinator's record

    def add(s: grpc.Server) -> None:
        node_pb2_grpc.add_NodeServiceServicer_to_server(recorder, s)
        audit_pb2_grpc.add_WitnessServiceServicer_to_server(witness, s)

    # As serve_node does: mTLS, and only the coordinator may search.
    tls = security(tmp_path / "fed", "node-NL")
    server = start_server(
        add, "127.0.0.1:0", limits, tls.server_credentials(), [tls.interceptor(NODE_RULES, "NL")]
    )
    try:
        entry = node_entry(tmp_path / "fed", "NL", server.address)
        with federation(tmp_path / "fed", ("DE",), records=0, extra_nodes=(entry,)) as fed:
            probe = capture(person, rng, 0.9)
            requester = fed.requester("DE")
            report = requester.lookup(probe, header("DE"))
            requester.lookup(probe, header("DE"))  # the same probe, a second time
            assert len(report.matches) == 1
    finally:
        server.stop(0.2)
        service.close()
        node_gate.close()
        audit.close()
        store.close()

    assert len(recorder.seen) == 2
    # Keys arrived once, for the epoch, and hold public material only.
    assert len(recorder.registrations) == 1
    assert recorder.registrations[0].key_bundle.secret_key == b""
    assert recorder.registrations[0].key_bundle.public_key
    first, second = recorder.seen
    for request in recorder.seen:
        assert isinstance(request, node_pb2.SearchRequest)
        assert _float_fields(request) == []  # no clear-text vector anywhere in the message
        assert request.probe.key_id == shared_keys("DE").key_id
        raw = request.SerializeToString()
        for encoding in ("<f4", "<f8", ">f4", ">f8"):
            # Not even a prefix of the probe's coordinates appears in the bytes.
            assert probe.astype(encoding)[:4].tobytes() not in raw
    # Randomized encryption: the node cannot even tell that the same probe came twice.
    assert first.probe.ciphertext != second.probe.ciphertext

    # What the node got is a real ciphertext of the probe under the requester's key ...
    # (both its ciphertexts: the probe and its norm copy, each second part expanded by the
    # node from the probe's seed, fedmatch/he/uniform.py)
    ctx = DEFAULT_PARAM_SET.context()
    keys = shared_keys("DE")
    plain = seal.Plaintext()
    for sent in uniform.open_probe_bytes(DEFAULT_PARAM_SET, first.probe.ciphertext):
        ct = seal.Ciphertext()
        sealio.load_bytes(partial(ct.load, ctx), sent, "probe")
        assert ct.size() == 2
        keys._decryptor.decrypt(ct, plain)
        decoded = np.asarray(seal.CKKSEncoder(ctx).decode_double(plain)[:DIM])
        np.testing.assert_allclose(decoded, probe, atol=1e-5)
    # ... and the wrong key opens nothing like it.
    stranger = seal.KeyGenerator(ctx).secret_key()
    seal.Decryptor(ctx, stranger).decrypt(ct, plain)
    wrong = np.asarray(seal.CKKSEncoder(ctx).decode_double(plain)[:DIM])
    assert not np.allclose(wrong, probe, atol=1e-2)


def test_logs_hold_no_templates_scores_or_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with federation(tmp_path, ("DE", "IT"), records=50) as fed:
        rng = np.random.default_rng(22)
        person = unit_vectors(rng, 1, DIM)[0]
        stored = capture(person, rng, 0.9)
        enrol(fed.nodes["IT"], stored, "IT-LOG-1", Category.IRREGULAR_CROSSING, dt.date(2026, 5, 5))
        requester = fed.requester("DE")
        probe = capture(person, rng, 0.9)
        report = requester.lookup(probe, header("DE"))
        requester.resolve(report, TODAY.isoformat(), fed.verdicts(report))
        channel = fed.node_channel("IT")  # as the coordinator
        unknown = header("DE")  # a query the node never answered, with its verified-hit record
        signed = signed_resolve(fed.tmp, unknown)
        verified = fed.authorize(hit_verified(unknown, "IT", [b"x" * 8], signed=signed), ["IT"])
        with pytest.raises(grpc.RpcError):  # a refusal path logs too
            node_pb2_grpc.NodeServiceStub(channel).GetHitDetails(
                node_pb2.HitDetailsRequest(
                    header=header_to_pb(unknown, signed),
                    handles=[b"x" * 8],
                    authorization=authorization_to_pb(verified),
                    verdicts=[
                        verdict_to_pb(v)
                        for v in confirmations(fed.tmp, unknown, [("IT", b"x" * 8)])
                    ],
                )
            )
    text = caplog.text
    # Logging did happen, on the success and the refusal paths.
    assert "search query=" in text and "resolve query=" in text and "NOT_FOUND" in text
    score = float(stored.astype(np.float64) @ probe.astype(np.float64))
    for value in (*probe[:8], *stored[:8], score):
        for fmt in (f"{value:.6f}", f"{value:.4f}", repr(float(value))):
            assert fmt not in text
    for _, handle in report.matches:
        assert handle.hex() not in text
    bundle = shared_keys("DE").public_bundle()
    assert bundle.public_key[:32].hex() not in text


def test_the_answer_does_not_tell_the_register_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a node's answer said how many records its register holds (record_count),
    and its block count said it to 8,192. Now no message of the lookup carries a size, and
    the blocks are padded with decoys to a bucket: a register of 300 records and one of
    301 answer with the same 4 blocks; the person searched is still found."""
    from fedmatch.rpc.v1 import coordinator_pb2

    for message in (
        node_pb2.SearchResponse,
        coordinator_pb2.NodeResult,
        coordinator_pb2.LookupResponse,
    ):
        names = {f.name for f in message.DESCRIPTOR.fields}
        assert not any("count" in n or "size" in n for n in names), (message, names)
    with federation(tmp_path, ("DE", "IT", "FR"), records=300) as fed:
        rng = np.random.default_rng(23)
        person = unit_vectors(rng, 1, DIM)[0]
        enrol(
            fed.nodes["IT"], capture(person, rng, 0.9), "IT-SIZE-1", Category.IRREGULAR_CROSSING,
            dt.date(2026, 5, 5),
        )  # fmt: skip
        assert fed.nodes["IT"].record_count() == 301 and fed.nodes["FR"].record_count() == 300
        captured: list[Any] = []
        requester = fed.requester("DE")
        original = requester._stub.Lookup

        def spy(request: Any, **kwargs: Any) -> Any:
            response = original(request, **kwargs)
            captured.append(response)
            return response

        monkeypatch.setattr(requester._stub, "Lookup", spy)
        report = requester.lookup(capture(person, rng, 0.9), header("DE"))
        (response,) = captured
        assert {n.member_state: len(n.blocks) for n in response.nodes} == {"IT": 4, "FR": 4}
        assert {n.member_state: n.matches for n in report.nodes} == {"IT": 1, "FR": 0}
