"""Bad input gets a clear status and the server keeps serving honest requests.

Each case sends one hostile request to a real server, asserts the exact status code, then
checks that an honest lookup still succeeds. Every request travels over mTLS as the party
allowed to make it (a node's Search as the coordinator, its Enroll as its own operator, a
lookup as DE's operator) and is signed by an operator of its requesting state. Requests
sent straight to a node carry the coordinator's authorization (its log entry for that very
signed request, witnessed by the node, as a real lookup or resolve does), unless the
refusal under test comes before that check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc
import numpy as np
import pytest

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, QueryHeader
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.protocol.limits import MAX_NODE_RESPONSE_BYTES
from fedmatch.protocol.wire import authorization_to_pb, header_from_pb, header_to_pb, verdict_to_pb
from fedmatch.rpc.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from tests.federation import (
    DIM,
    MODEL,
    VERIFIERS,
    Federation,
    confirmations,
    enrol,
    federation,
    header,
    hit_verified,
    node_channel,
    sealed_opening,
    search_authorized,
    shared_keys,
    signed_lookup,
    signed_resolve,
)

PARAM_SET = DEFAULT_PARAM_SET.name
THRESHOLD_VERSION = "2026-11-v1"
# Above the 65 MiB receive bound (a key registration is the largest honest message).
OVERSIZE = 66 << 20


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("bad"), ("DE", "IT"), records=100) as f:
        # DE's keys are registered for this epoch (through the coordinator, at IT).
        r = f.requester("DE")
        r.register_keys(header("DE"))
        yield f


@pytest.fixture(scope="module")
def node_stub(fed: Federation) -> node_pb2_grpc.NodeServiceStub:
    """IT's node, called as the coordinator (the only party that may search it). The client
    side allows big messages so that oversize requests reach the server's limit."""
    channel = fed.node_channel("IT", max_receive=MAX_NODE_RESPONSE_BYTES, max_send=128 << 20)
    return node_pb2_grpc.NodeServiceStub(channel)


def _node_as(fed: Federation, party: str) -> node_pb2_grpc.NodeServiceStub:
    """IT's node called by another party (enrolment is for IT's own operators)."""
    return node_pb2_grpc.NodeServiceStub(fed.node_channel("IT", party))


@pytest.fixture(scope="module")
def coord_stub(fed: Federation) -> coordinator_pb2_grpc.CoordinatorServiceStub:
    """The coordinator, called by DE's operator workstation."""
    channel = fed.coordinator_channel("operator-DE", max_receive=256 << 20, max_send=128 << 20)
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)


def _probe(
    ciphertext: bytes | None = None,
    dimension: int = DIM,
    model: str = MODEL,
    key_id: str | None = None,
    param_set: str = PARAM_SET,
) -> common_pb2.EncryptedProbe:
    keys = shared_keys("DE")
    if ciphertext is None:
        ciphertext = keys.encrypt_probe(unit_vectors(np.random.default_rng(), 1, DIM)[0])
    return common_pb2.EncryptedProbe(
        he_param_set=param_set,
        ciphertext=ciphertext,
        model_id=model,
        dimension=dimension,
        key_id=keys.key_id if key_id is None else key_id,
    )


def _search(
    fed: Federation, *, sign: bool = True, on_record: bool = True, **changes: object
) -> node_pb2.SearchRequest:
    """A search request, signed (``sign``) by an operator of its requesting state for exactly
    this header and probe ciphertext and authorized (``on_record``) by the coordinator's
    entry naming that signed request. Neither: sent as is (e.g. a header that cannot be
    decoded); on record but not signed: the entry names a signed request never sent."""
    fields: dict[str, object] = {
        "header": header_to_pb(header("DE")),
        "probe": _probe(),
        "threshold_version": THRESHOLD_VERSION,
    }
    fields.update(changes)
    request = node_pb2.SearchRequest(**fields)  # type: ignore[arg-type]
    if sign or on_record:
        hdr = header_from_pb(request.header, True)
        signed = signed_lookup(fed.tmp, hdr, request.probe.ciphertext)
        if sign:
            request.header.CopyFrom(header_to_pb(hdr, signed))
        if on_record:
            event = search_authorized(
                hdr, request.probe.ciphertext, request.probe.key_id, ["IT"], signed=signed
            )
            request.authorization.CopyFrom(authorization_to_pb(fed.authorize(event, ["IT"])))
    return request


def _details(
    fed: Federation,
    handles: list[bytes],
    hdr: QueryHeader | None = None,
    *,
    sign: bool = True,
    on_record: bool = True,
) -> node_pb2.HitDetailsRequest:
    """A hit-details request signed by DE's operator (``sign``), for hits the coordinator
    logged as verified at that signed request (``on_record``)."""
    hdr = hdr or header("DE")
    signed = signed_resolve(fed.tmp, hdr)
    verdicts = confirmations(fed.tmp, hdr, [("IT", h) for h in handles if len(h) == 8])
    request = node_pb2.HitDetailsRequest(
        header=header_to_pb(hdr, signed if sign else None),
        handles=handles,
        verdicts=[verdict_to_pb(v) for v in verdicts],
    )
    if on_record:
        event = hit_verified(hdr, "IT", handles, VERIFIERS, signed=signed)
        request.authorization.CopyFrom(authorization_to_pb(fed.authorize(event, ["IT"])))
    return request


def _bundle_with_secret() -> common_pb2.HEKeyBundle:
    b = shared_keys("DE").private_bundle()
    return common_pb2.HEKeyBundle(
        he_param_set=b.param_set, parms=b.parms, public_key=b.public_key,
        galois_keys=b.galois_keys, secret_key=b.secret_key,
    )  # fmt: skip


def _register(bundle: common_pb2.HEKeyBundle | None) -> common_pb2.RegisterKeysRequest:
    request = common_pb2.RegisterKeysRequest(header=header_to_pb(header("DE")))
    if bundle is not None:
        request.key_bundle.CopyFrom(bundle)
    return request


def _header_pb(state: str = "DE") -> common_pb2.RequestHeader:
    return common_pb2.RequestHeader(
        query_id="0" * 32, requesting_state=state, purpose=common_pb2.PURPOSE_ASYLUM_DUBLIN,
        legal_basis="x", case_reference="y",
    )  # fmt: skip


def _enroll(
    category: int = common_pb2.CATEGORY_APPLICANT,
    state: str = "IT",
    values: list[float] | None = None,
    model: str = MODEL,
) -> node_pb2.EnrollRequest:
    hdr = header_to_pb(header(state)) if state in ("IT", "DE") else _header_pb(state)
    t = unit_vectors(np.random.default_rng(), 1, DIM)[0].tolist() if values is None else values
    return node_pb2.EnrollRequest(
        header=hdr,
        record=node_pb2.RecordMetadata(
            reference=f"IT-BAD-{np.random.default_rng().integers(10**12)}",
            category=category,  # type: ignore[arg-type]
            event_date="2026-01-01", event_place="Bari", capture_date="2026-01-01",
            birth_date="1990-05-17",
        ),
        template=node_pb2.Template(model_id=model, values=t),
    )  # fmt: skip


def _other_probe(fed: Federation) -> node_pb2.SearchRequest:
    """Authorized for one probe, sent with another (the same header)."""
    request = _search(fed)
    request.probe.CopyFrom(_probe())
    return request


def _other_query(fed: Federation) -> node_pb2.SearchRequest:
    """Authorized for one query, sent with another query id (the same probe)."""
    request = _search(fed)
    request.header.query_id = header("DE").query_id
    return request


def _other_handles(fed: Federation) -> node_pb2.HitDetailsRequest:
    request = _details(fed, [b"h" * 8])
    request.handles[:] = [b"i" * 8]
    return request


NodeCase = tuple[
    str, Callable[[node_pb2_grpc.NodeServiceStub, Federation], object], grpc.StatusCode, str
]

NODE_CASES: list[NodeCase] = [
    ("undecodable-ciphertext", lambda s, f: s.Search(_search(f, probe=_probe(b"\x01\x02" * 500))),
     grpc.StatusCode.INVALID_ARGUMENT, "probe is not in seeded form"),
    ("empty-ciphertext", lambda s, f: s.Search(_search(f, probe=_probe(b""))),
     grpc.StatusCode.INVALID_ARGUMENT, "probe ciphertext is empty"),
    ("unknown-key-id", lambda s, f: s.Search(_search(f, probe=_probe(key_id="ab" * 32))),
     grpc.StatusCode.FAILED_PRECONDITION, "unknown key id"),
    ("malformed-key-id", lambda s, f: s.Search(_search(f, probe=_probe(key_id="not-hex"))),
     grpc.StatusCode.INVALID_ARGUMENT, "key_id"),
    ("unknown-param-set", lambda s, f: s.Search(_search(f, probe=_probe(param_set="bfv-x"))),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown homomorphic-encryption parameter set"),
    ("wrong-dimension", lambda s, f: s.Search(_search(f, probe=_probe(dimension=512))),
     grpc.StatusCode.INVALID_ARGUMENT, "dimension must be 128"),
    ("other-model", lambda s, f: s.Search(_search(f, probe=_probe(model="arcface-r50"))),
     grpc.StatusCode.FAILED_PRECONDITION, "model"),
    ("other-threshold-version", lambda s, f: s.Search(_search(f, threshold_version="1999-v0")),
     grpc.StatusCode.FAILED_PRECONDITION, "threshold version"),
    ("unknown-member-state", lambda s, f: s.Search(
        _search(f, sign=False, on_record=False, header=_header_pb("XX"))),
     grpc.StatusCode.INVALID_ARGUMENT, "not a member state"),
    ("malformed-state-code", lambda s, f: s.Search(
        _search(f, sign=False, on_record=False, header=_header_pb("germany"))),
     grpc.StatusCode.INVALID_ARGUMENT, "ISO 3166-1"),
    ("missing-header", lambda s, f: s.Search(node_pb2.SearchRequest(probe=_probe())),
     grpc.StatusCode.INVALID_ARGUMENT, "header is required"),
    ("missing-probe", lambda s, f: s.Search(node_pb2.SearchRequest(header=_header_pb())),
     grpc.StatusCode.INVALID_ARGUMENT, "probe is required"),
    ("own-state-search", lambda s, f: s.Search(_search(f, header=header_to_pb(header("IT")))),
     grpc.StatusCode.PERMISSION_DENIED, "own register"),
    ("oversize-message", lambda s, f: s.Search(
        _search(f, sign=False, on_record=False, probe=_probe(b"\x00" * OVERSIZE))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ("oversize-ciphertext-field",
     lambda s, f: s.Search(_search(f, probe=_probe(b"\x00" * (600 << 10)))),
     grpc.StatusCode.INVALID_ARGUMENT, "exceeds"),
    ("context-with-secret-key", lambda s, f: s.RegisterKeys(_register(_bundle_with_secret())),
     grpc.StatusCode.INVALID_ARGUMENT, "secret key"),
    ("garbage-key-bundle", lambda s, f: s.RegisterKeys(_register(common_pb2.HEKeyBundle(
        he_param_set=PARAM_SET, parms=b"x" * 50, public_key=b"y", galois_keys=b"z"))),
     grpc.StatusCode.INVALID_ARGUMENT, "encryption parameters could not be decoded"),
    ("missing-key-bundle", lambda s, f: s.RegisterKeys(_register(None)),
     grpc.StatusCode.INVALID_ARGUMENT, "key_bundle is required"),
    # Enrolment: by IT's own operator workstation.
    ("unknown-category", lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(category=42)),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown category"),
    ("unspecified-category", lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(category=0)),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown category"),
    ("enrol-wrong-dimension",
     lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(values=[1.0])),
     grpc.StatusCode.INVALID_ARGUMENT, "dimension must be 128"),
    ("enrol-not-unit-norm",
     lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(values=[0.5] * DIM)),
     grpc.StatusCode.INVALID_ARGUMENT, "unit-norm"),
    ("enrol-other-model",
     lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(model="arcface-r50")),
     grpc.StatusCode.FAILED_PRECONDITION, "model"),
    ("enrol-by-another-state", lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(state="DE")),
     grpc.StatusCode.PERMISSION_DENIED, "own member state"),
    # Another state's operator workstation is refused before its request is read.
    ("enrol-from-another-states-operator",
     lambda s, f: _node_as(f, "operator-DE").Enroll(_enroll(state="DE")),
     grpc.StatusCode.PERMISSION_DENIED, "only IT's own operator may call this"),
    ("enrol-unknown-state", lambda s, f: _node_as(f, "operator-IT").Enroll(_enroll(state="ZZ")),
     grpc.StatusCode.INVALID_ARGUMENT, "not a member state"),
    ("details-unknown-query", lambda s, f: s.GetHitDetails(_details(f, [b"h" * 8])),
     grpc.StatusCode.NOT_FOUND, "no search"),
    ("details-bad-handle", lambda s, f: s.GetHitDetails(_details(f, [b"h" * 16])),
     grpc.StatusCode.INVALID_ARGUMENT, "a handle is 8 bytes"),
    ("details-too-many-handles", lambda s, f: s.GetHitDetails(_details(f, [b"h" * 8] * 65)),
     grpc.StatusCode.INVALID_ARGUMENT, "at most 64"),
    # Off the coordinator's record: refused before any other check of the request's content.
    ("search-without-authorization", lambda s, f: s.Search(_search(f, on_record=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not on record"),
    ("search-authorized-for-another-probe", lambda s, f: s.Search(_other_probe(f)),
     grpc.StatusCode.PERMISSION_DENIED, "not on record"),
    ("search-authorized-for-another-query", lambda s, f: s.Search(_other_query(f)),
     grpc.StatusCode.PERMISSION_DENIED, "not on record"),
    ("details-without-authorization",
     lambda s, f: s.GetHitDetails(_details(f, [b"h" * 8], on_record=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not on record"),
    ("details-authorized-for-other-handles", lambda s, f: s.GetHitDetails(_other_handles(f)),
     grpc.StatusCode.PERMISSION_DENIED, "not on record"),
    # On record, but not signed by the requesting authority.
    ("search-unsigned", lambda s, f: s.Search(_search(f, sign=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not signed"),
    ("details-unsigned", lambda s, f: s.GetHitDetails(_details(f, [b"h" * 8], sign=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not signed"),
]  # fmt: skip


def _honest_lookup_works(fed: Federation) -> None:
    rng = np.random.default_rng()
    report = fed.requester("DE").lookup(unit_vectors(rng, 1, DIM)[0], header("DE"))
    assert [(n.member_state, n.outcome) for n in report.nodes] == [("IT", "ok")]


@pytest.mark.parametrize(
    ("name", "call", "code", "message"), NODE_CASES, ids=[c[0] for c in NODE_CASES]
)
def test_node_refuses_bad_input_and_keeps_serving(
    fed: Federation, node_stub: node_pb2_grpc.NodeServiceStub, name: str,
    call: Callable[[node_pb2_grpc.NodeServiceStub, Federation], object],
    code: grpc.StatusCode, message: str,
) -> None:  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        call(node_stub, fed)
    assert err.value.code() == code, err.value.details()
    assert message in (err.value.details() or "")
    _honest_lookup_works(fed)


def test_reused_query_id_is_refused(
    fed: Federation, node_stub: node_pb2_grpc.NodeServiceStub
) -> None:
    request = _search(fed)
    first = node_stub.Search(request)
    # A retry of the very same call is answered again, from the node's memory.
    assert node_stub.Search(request) == first
    # Another signed request for the same query id, with its own authorization: a new
    # signature and record are no way around it.
    hdr = header_from_pb(request.header, True)
    with pytest.raises(grpc.RpcError) as err:
        node_stub.Search(_search(fed, header=header_to_pb(hdr), probe=request.probe))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Once the answer is no longer kept, the first request is a replay.
    fed.nodes["IT"]._answers.clear()
    with pytest.raises(grpc.RpcError) as err:
        node_stub.Search(request)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in (err.value.details() or "")


def test_malformed_protobuf_bytes(fed: Federation) -> None:
    # As the coordinator, so that the bytes reach the server's parser.
    channel = node_channel(fed.tmp, "IT", fed.servers["IT"].address, max_receive=1 << 20,
                           max_send=1 << 20)  # fmt: skip
    try:
        raw = channel.unary_unary(
            "/fedmatch.rpc.v1.NodeService/Search",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for body in (b"\xff\xff\xff\xff", b"\x0a\x05abc", bytes(range(256))):
            with pytest.raises(grpc.RpcError) as err:
                raw(body, timeout=5)
            # grpcio answers a body that does not parse with INTERNAL before our handler runs.
            assert err.value.code() == grpc.StatusCode.INTERNAL
    finally:
        channel.close()
    _honest_lookup_works(fed)


CoordCase = tuple[
    str,
    Callable[[coordinator_pb2_grpc.CoordinatorServiceStub, Federation], object],
    grpc.StatusCode,
    str,
]


def _lookup(
    fed: Federation, *, sign: bool = True, **changes: object
) -> coordinator_pb2.LookupRequest:
    """A lookup, signed (``sign``) by DE's operator for exactly this header and probe."""
    fields: dict[str, object] = {"header": header_to_pb(header("DE")), "probe": _probe()}
    fields.update(changes)
    request = coordinator_pb2.LookupRequest(**fields)  # type: ignore[arg-type]
    if sign:
        hdr = header_from_pb(request.header, True)
        request.header.CopyFrom(
            header_to_pb(hdr, signed_lookup(fed.tmp, hdr, request.probe.ciphertext))
        )
    return request


def _resolve(
    fed: Federation, application_date: str = "2026-11-21", *, sign: bool = True
) -> coordinator_pb2.ResolveRequest:
    """A resolve of a query the coordinator never saw, signed by DE's operator (``sign``)."""
    hdr = header("DE")
    signed = signed_resolve(fed.tmp, hdr) if sign else None
    return coordinator_pb2.ResolveRequest(
        header=header_to_pb(hdr, signed), application_date=application_date
    )


def _foreign_key_id() -> str:
    return shared_keys("IT").key_id


def _with_statement(
    request: coordinator_pb2.ResolveRequest, statement: bytes
) -> coordinator_pb2.ResolveRequest:
    """``request`` carrying ``statement`` in place of its signed one (the signature stays)."""
    request.header.signed.statement = statement
    return request


COORD_CASES: list[CoordCase] = [
    ("context-with-secret-key", lambda s, f: s.RegisterKeys(_register(_bundle_with_secret())),
     grpc.StatusCode.INVALID_ARGUMENT, "secret key"),
    ("unknown-key-id", lambda s, f: s.Lookup(_lookup(f, probe=_probe(key_id="cd" * 32))),
     grpc.StatusCode.FAILED_PRECONDITION, "unknown key id"),
    ("unknown-member-state",
     lambda s, f: s.Lookup(_lookup(f, sign=False, header=_header_pb("XX"))),
     grpc.StatusCode.INVALID_ARGUMENT, "not a member state"),
    ("state-without-node", lambda s, f: s.Lookup(_lookup(f, sign=False, header=_header_pb("PT"))),
     grpc.StatusCode.PERMISSION_DENIED, "no node"),
    ("wrong-dimension", lambda s, f: s.Lookup(_lookup(f, probe=_probe(dimension=64))),
     grpc.StatusCode.INVALID_ARGUMENT, "dimension must be 128"),
    ("other-model", lambda s, f: s.Lookup(_lookup(f, probe=_probe(model="arcface-r50"))),
     grpc.StatusCode.FAILED_PRECONDITION, "model"),
    ("oversize-message",
     lambda s, f: s.Lookup(_lookup(f, sign=False, probe=_probe(b"\x00" * OVERSIZE))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ("resolve-unknown-query", lambda s, f: s.Resolve(_resolve(f)),
     grpc.StatusCode.NOT_FOUND, "no lookup"),
    ("resolve-bad-date", lambda s, f: s.Resolve(_resolve(f, "21/11/2026")),
     grpc.StatusCode.INVALID_ARGUMENT, "application_date"),
    ("missing-purpose", lambda s, f: s.Lookup(_lookup(
        f, sign=False, header=common_pb2.RequestHeader(
            query_id="a" * 32, requesting_state="DE", legal_basis="x", case_reference="y"))),
     grpc.StatusCode.INVALID_ARGUMENT, "purpose"),
    # Well-formed, but not signed by the requesting authority.
    ("lookup-unsigned", lambda s, f: s.Lookup(_lookup(f, sign=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not signed"),
    ("resolve-unsigned", lambda s, f: s.Resolve(_resolve(f, sign=False)),
     grpc.StatusCode.PERMISSION_DENIED, "not signed"),
    # A statement nested deeper than the JSON parser recurses (within its 4 KiB bound).
    ("resolve-statement-nested-json", lambda s, f: s.Resolve(_with_statement(
        _resolve(f), b"[" * 2000 + b"]" * 2000)),
     grpc.StatusCode.INVALID_ARGUMENT, "request statement is not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "call", "code", "message"), COORD_CASES, ids=[c[0] for c in COORD_CASES]
)
def test_coordinator_refuses_bad_input_and_keeps_serving(
    fed: Federation, coord_stub: coordinator_pb2_grpc.CoordinatorServiceStub, name: str,
    call: Callable[[coordinator_pb2_grpc.CoordinatorServiceStub, Federation], object],
    code: grpc.StatusCode, message: str,
) -> None:  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        call(coord_stub, fed)
    assert err.value.code() == code, err.value.details()
    assert message in (err.value.details() or "")
    _honest_lookup_works(fed)


def test_key_id_of_another_state_is_refused(
    fed: Federation, coord_stub: coordinator_pb2_grpc.CoordinatorServiceStub
) -> None:
    fed.requester("IT").register_keys(header("IT"))  # IT's keys, registered at DE's node
    with pytest.raises(grpc.RpcError) as err:
        coord_stub.Lookup(_lookup(fed, probe=_probe(key_id=_foreign_key_id())))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_resolve_refuses_states_that_did_not_answer(
    fed: Federation, coord_stub: coordinator_pb2_grpc.CoordinatorServiceStub
) -> None:
    rng = np.random.default_rng()
    person = unit_vectors(rng, 1, DIM)[0]
    enrol(fed.nodes["IT"], capture(person, rng, 0.9), f"IT-R-{rng.integers(10**9)}",
          Category.APPLICANT, dt.date(2026, 3, 3))  # fmt: skip
    report = fed.requester("DE").lookup(capture(person, rng, 0.9), header("DE"))
    assert len(report.matches) == 1
    for state in ("FR", "QQ"):
        request = coordinator_pb2.ResolveRequest(
            header=header_to_pb(report.header, signed_resolve(fed.tmp, report.header)),
            application_date="2026-11-21",
            hits=[coordinator_pb2.HitRef(member_state=state, handle=report.matches[0][1])],
            verdicts=[verdict_to_pb(v) for v in fed.verdicts(report)],
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            coord_stub.Resolve(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A position past the end of the response: NOT_FOUND from the node when its packet is
    # asked for, reported as that node's refusal, not as "no match"; no verdict can then
    # bind its images, so the coordinator refuses a resolve naming it.
    past_end = b"\x00\x00\x00\x09" * 2
    claimed = replace(report, matches=(("IT", past_end),))
    fetched = fed.requester("DE").fetch_packets(claimed)
    assert fetched.packets == () and fetched.failed["IT"].startswith("refused: NOT_FOUND")
    request = coordinator_pb2.ResolveRequest(
        header=header_to_pb(report.header, signed_resolve(fed.tmp, report.header)),
        application_date="2026-11-21",
        hits=[coordinator_pb2.HitRef(member_state="IT", handle=past_end)],
        verdicts=[
            verdict_to_pb(v) for v in confirmations(fed.tmp, report.header, [("IT", past_end)])
        ],
        openings=[coordinator_pb2.SealedOpening(
            member_state="IT", sealed=sealed_opening(report, "IT"))],
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        coord_stub.Resolve(request)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "verification packet" in str(err.value.details())
