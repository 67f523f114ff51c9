"""Who may ask what, over which connection: every refusal of issue 6 against a running
federation (mTLS, signed requests, node policy), each with its exact status and proof that
no homomorphic work ran."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import fedmatch.pki.ca as ca_module
from fedmatch.audit.entry import digest_hex
from fedmatch.audit.note import NoteSigner
from fedmatch.domain import EncryptedProbe, Purpose, QueryHeader
from fedmatch.errors import PermissionDenied
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.ca import TlsFiles, issue
from fedmatch.pki.credentials import channel_credentials
from fedmatch.pki.names import dns_name
from fedmatch.pki.provision import provision
from fedmatch.pki.verify import verify_peer
from fedmatch.protocol.limits import MAX_LOOKUP_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.protocol.statement import SignedRequest, approve, sign_request
from fedmatch.protocol.wire import header_to_pb, probe_to_pb
from fedmatch.rpc.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from node.policy import SearchPolicy
from tests.federation import (
    OPERATOR,
    UNIT,
    Federation,
    federation,
    pki,
    request_signer,
    shared_keys,
)

COORDINATOR_DNS = dns_name("coordinator", "eu")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("security")
    with federation(tmp, records=30) as f:
        for node in f.nodes.values():
            node.he_calls = 0  # type: ignore[attr-defined]
            real = node.engine.search

            def counted(*args: Any, _node: Any = node, _real: Any = real, **kw: Any) -> Any:
                _node.he_calls += 1
                return _real(*args, **kw)

            node.engine.search = counted  # type: ignore[method-assign]
        yield f


def he_calls(fed: Federation) -> int:
    return sum(n.he_calls for n in fed.nodes.values())  # type: ignore[attr-defined]


def _channel(fed: Federation, files: TlsFiles | None, dns: str, address: str) -> grpc.Channel:
    credentials = channel_credentials(files) if files is not None else None
    return make_channel(address, MAX_LOOKUP_RESPONSE_BYTES, MAX_RECEIVE_BYTES, credentials, dns)


def coordinator_stub(
    fed: Federation, files: TlsFiles | None
) -> coordinator_pb2_grpc.CoordinatorServiceStub:
    channel = _channel(fed, files, COORDINATOR_DNS, fed.coordinator_server.address)
    fed.stack.callback(channel.close)
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)


def operator(fed: Federation, state: str) -> TlsFiles:
    return pki(fed.tmp, state)[f"operator-{state}"].tls


def new_header(state: str, purpose: Purpose = Purpose.ASYLUM_DUBLIN) -> QueryHeader:
    import secrets

    return QueryHeader(
        secrets.token_hex(16),
        state,
        purpose,
        "Reg. (EU) 2024/1358 Art. 27",
        "C-SEC",
        UNIT,
        OPERATOR,
    )


def lookup_request(
    fed: Federation,
    state: str,
    purpose: Purpose = Purpose.ASYLUM_DUBLIN,
    sign: Callable[[QueryHeader, str], SignedRequest] | None = None,
) -> coordinator_pb2.LookupRequest:
    """A well-formed lookup of ``state`` (keys registered), signed by ``sign`` (default: the
    state's operator workstation)."""
    keys = shared_keys(state)
    fed.requester(state).register_keys(new_header(state))
    header = new_header(state, purpose)
    probe = EncryptedProbe(
        keys.params.name,
        keys.encrypt_probe(np.eye(128)[0]),
        "sface-2021dec-int8bq",
        128,
        keys.key_id,
    )
    probe_hash = digest_hex(probe.ciphertext)
    signed = (
        sign(header, probe_hash)
        if sign is not None
        else request_signer(fed.tmp, state).sign(header, "lookup", probe_hash)
    )
    return coordinator_pb2.LookupRequest(
        header=header_to_pb(header, signed), probe=probe_to_pb(probe)
    )


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def refused_lookup(fed: Federation, files: TlsFiles | None) -> grpc.RpcError:
    """A German lookup sent over a connection made with ``files``; it must fail."""
    request = lookup_request(fed, "DE")
    return refused(lambda: coordinator_stub(fed, files).Lookup(request, timeout=10))


def outcomes(response: coordinator_pb2.LookupResponse) -> dict[str, tuple[int, str]]:
    return {n.member_state: (n.outcome, n.detail) for n in response.nodes}


# -- transport: who is on the other end -------------------------------------------------


def test_no_client_certificate_is_refused_at_the_handshake(fed: Federation) -> None:
    before = he_calls(fed)
    root = operator(fed, "DE").root.read_bytes()
    channel = grpc.secure_channel(
        fed.coordinator_server.address,
        grpc.ssl_channel_credentials(root_certificates=root),
        options=[("grpc.ssl_target_name_override", COORDINATOR_DNS)],
    )
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    err = refused(lambda: stub.Lookup(lookup_request(fed, "DE"), timeout=10))
    channel.close()
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert he_calls(fed) == before


def test_certificate_from_an_unknown_ca_is_refused(fed: Federation, tmp_path: Path) -> None:
    before = he_calls(fed)
    stranger = provision(tmp_path / "other-pki", ["DE"])["operator-DE"].tls
    # It trusts our root (so only its own certificate is the problem).
    files = TlsFiles(stranger.key, stranger.chain, operator(fed, "DE").root)
    err = refused_lookup(fed, files)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert he_calls(fed) == before


def test_expired_certificate_is_refused(fed: Federation, tmp_path: Path) -> None:
    before = he_calls(fed)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    signer = NoteSigner.generate(dns_name("operator", "DE", "old"))
    files = issue(fed.tmp / "pki" / "ca", "operator", "DE", "old", signer, tmp_path / "old",
                  days=2, now=past)  # fmt: skip
    err = refused_lookup(fed, files)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert he_calls(fed) == before


def test_french_ca_cannot_issue_a_german_node(fed: Federation, tmp_path: Path) -> None:
    ca = fed.tmp / "pki" / "ca"
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    for src, dst in (("fr.key", "de.key"), ("fr.pem", "de.pem"), ("root.pem", "root.pem")):
        shutil.copy(ca / src, rogue / dst)
        (rogue / dst).chmod(0o600)
    signer = NoteSigner.generate("fedmatch/node/DE")
    with pytest.raises(Exception, match=r"may not issue node\.de\.fedmatch\.eu"):
        issue(rogue, "node", "DE", "", signer, rogue / "refused")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ca_module, "_check_constraints", lambda ca, dns: None)
        forged = issue(rogue, "node", "DE", "", signer, rogue / "leaf")
    with pytest.raises(PermissionDenied, match="name constraints"):
        verify_peer(forged.chain.read_bytes(), forged.root.read_bytes(), [])
    # As a client of the real German node, the forged certificate does not get through.
    channel = _channel(fed, forged, dns_name("node", "DE"), fed.servers["DE"].address)
    stub = node_pb2_grpc.NodeServiceStub(channel)
    err = refused(
        lambda: stub.GetInfo(
            node_pb2.InfoRequest(header=header_to_pb(new_header("DE"))), timeout=10
        )
    )
    channel.close()
    assert err.code() == grpc.StatusCode.UNAVAILABLE


# -- authorization: what each role may call -------------------------------------------


def test_wrong_role_for_the_method_is_permission_denied(fed: Federation) -> None:
    before = he_calls(fed)
    # An operator workstation calling a node's Search directly (only the coordinator may).
    channel = _channel(fed, operator(fed, "DE"), dns_name("node", "IT"), fed.servers["IT"].address)
    fed.stack.callback(channel.close)
    node = node_pb2_grpc.NodeServiceStub(channel)
    err = refused(lambda: node.Search(node_pb2.SearchRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "operator may not call Search" in (err.details() or "")
    # An auditor asking for a lookup.
    auditor = pki(fed.tmp)["auditor-edps"].tls
    err = refused_lookup(fed, auditor)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # An operator reading the coordinator's audit log.
    audit = audit_pb2_grpc.AuditServiceStub(
        _channel(fed, operator(fed, "DE"), COORDINATOR_DNS, fed.coordinator_server.address)
    )
    err = refused(lambda: audit.GetCheckpoint(audit_pb2.AuditRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # A French operator enrolling at the German node (own state only).
    de_node = node_pb2_grpc.NodeServiceStub(
        _channel(fed, operator(fed, "FR"), dns_name("node", "DE"), fed.servers["DE"].address)
    )
    err = refused(lambda: de_node.Enroll(node_pb2.EnrollRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert he_calls(fed) == before


# -- signed requests --------------------------------------------------------------------


def test_request_signed_by_a_sent_over_b_is_refused(fed: Federation, tmp_path: Path) -> None:
    before = he_calls(fed)
    # Signed by the German operator, sent over the French operator's connection.
    err = refused(
        lambda: coordinator_stub(fed, operator(fed, "FR")).Lookup(
            lookup_request(fed, "DE"), timeout=10
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot ask for DE" in (err.details() or "")
    assert he_calls(fed) == before
    # Same state, another workstation: a workstation only makes the channel, the officer's
    # own key signs (tests/integration/test_officer_identity.py), so any workstation of the
    # officer's state carries their request.
    desk2_key = NoteSigner.generate(dns_name("operator", "DE", "desk2"))
    desk2 = issue(fed.tmp / "pki" / "ca", "operator", "DE", "desk2", desk2_key, tmp_path / "d2")
    files = TlsFiles(desk2.key, desk2.chain, desk2.root)
    answered = coordinator_stub(fed, files).Lookup(lookup_request(fed, "DE"), timeout=30)
    assert {n.member_state for n in answered.nodes} == {"IT", "FR"}


def test_bad_signature_is_refused(fed: Federation) -> None:
    before = he_calls(fed)
    signer = request_signer(fed.tmp, "DE")

    def corrupted(header: QueryHeader, probe_hash: str) -> SignedRequest:
        good = signer.sign(header, "lookup", probe_hash)
        bad = bytes([good.signature[0] ^ 1]) + good.signature[1:]
        return dataclasses.replace(good, signature=bad)

    request = lookup_request(fed, "DE", sign=corrupted)
    err = refused(lambda: coordinator_stub(fed, operator(fed, "DE")).Lookup(request, timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "signature does not verify" in (err.details() or "")
    assert he_calls(fed) == before


def test_stale_timestamp_is_refused(fed: Federation) -> None:
    before = he_calls(fed)
    signer = request_signer(fed.tmp, "DE")
    stale_ms = int((time.time() - 600) * 1000)

    def stale(header: QueryHeader, probe_hash: str) -> SignedRequest:
        return sign_request(signer.key, signer.chain_pem, header, "lookup", signer.categories,
                            probe_hash, issued_ms=stale_ms)  # fmt: skip

    request = lookup_request(fed, "DE", sign=stale)
    err = refused(lambda: coordinator_stub(fed, operator(fed, "DE")).Lookup(request, timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "outside the accepted window" in (err.details() or "")
    assert he_calls(fed) == before


def test_retry_is_idempotent_and_replay_is_refused(fed: Federation) -> None:
    stub = coordinator_stub(fed, operator(fed, "DE"))
    request = lookup_request(fed, "DE")
    before = he_calls(fed)
    first = stub.Lookup(request, timeout=60)
    assert he_calls(fed) == before + 2  # IT and FR searched
    # A retry of the very same call is answered again, without searching again.
    again = stub.Lookup(request, timeout=60)
    assert again == first and he_calls(fed) == before + 2
    # Once the answer is no longer kept, the same signed request is a replay.
    fed.coordinator._answers.clear()
    err = refused(lambda: stub.Lookup(request, timeout=60))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in (err.details() or "")
    assert he_calls(fed) == before + 2


# -- node policy ------------------------------------------------------------------------


def test_law_enforcement_needs_the_verifying_authority(fed: Federation) -> None:
    stub = coordinator_stub(fed, operator(fed, "DE"))
    signer = dataclasses.replace(request_signer(fed.tmp, "DE"), prior_check="DE-NAT-2026-77")
    before = he_calls(fed)
    request = lookup_request(
        fed, "DE", Purpose.LAW_ENFORCEMENT, sign=lambda h, p: signer.sign(h, "lookup", p)
    )
    response = stub.Lookup(request, timeout=60)
    for state, (outcome, detail) in outcomes(response).items():
        assert outcome == coordinator_pb2.NODE_OUTCOME_REFUSED, state
        assert detail.startswith("PERMISSION_DENIED") and "verifying authority" in detail
    assert he_calls(fed) == before
    # With the approval of DE's verifying authority (and the prior check), it runs.
    court = pki(fed.tmp)["verifier-DE"]
    approved = dataclasses.replace(
        signer, approve=lambda s: approve(s, court.signer(), court.tls.chain.read_bytes())
    )
    request = lookup_request(
        fed, "DE", Purpose.LAW_ENFORCEMENT, sign=lambda h, p: approved.sign(h, "lookup", p)
    )
    response = stub.Lookup(request, timeout=60)
    assert {o for o, _ in outcomes(response).values()} == {coordinator_pb2.NODE_OUTCOME_OK}
    assert he_calls(fed) == before + 2


def test_purpose_not_allowed_for_a_category(fed: Federation) -> None:
    it = fed.nodes["IT"]
    saved = it.policy
    purposes = dict(saved.purposes) | {Purpose.RESETTLEMENT.value: ("resettlement",)}
    it.policy = SearchPolicy(version="test-resettlement", purposes=purposes)
    try:
        before = it.he_calls  # type: ignore[attr-defined]
        response = coordinator_stub(fed, operator(fed, "DE")).Lookup(
            lookup_request(fed, "DE", Purpose.RESETTLEMENT), timeout=60
        )
        outcome, detail = outcomes(response)["IT"]
        assert outcome == coordinator_pb2.NODE_OUTCOME_REFUSED
        assert detail.startswith("PERMISSION_DENIED")
        assert "may not search category applicant" in detail
        assert it.he_calls == before  # type: ignore[attr-defined]
        assert outcomes(response)["FR"][0] == coordinator_pb2.NODE_OUTCOME_OK
    finally:
        it.policy = saved


def test_quota_exceeded(fed: Federation) -> None:
    it = fed.nodes["IT"]
    saved = it.policy
    # FR has not searched at IT in this module: one search a day is its quota now.
    it.policy = dataclasses.replace(saved, daily_quota=1)
    try:
        stub = coordinator_stub(fed, operator(fed, "FR"))
        first = stub.Lookup(lookup_request(fed, "FR"), timeout=60)
        assert outcomes(first)["IT"][0] == coordinator_pb2.NODE_OUTCOME_OK
        before = it.he_calls  # type: ignore[attr-defined]
        second = stub.Lookup(lookup_request(fed, "FR"), timeout=60)
        outcome, detail = outcomes(second)["IT"]
        assert outcome == coordinator_pb2.NODE_OUTCOME_REFUSED
        assert detail.startswith("RESOURCE_EXHAUSTED") and "daily quota" in detail
        assert it.he_calls == before  # type: ignore[attr-defined]
    finally:
        it.policy = saved


def test_every_refusal_is_in_the_log_with_its_reason(fed: Federation) -> None:
    from fedmatch.audit.entry import EventKind

    reasons = {
        e.event.reason
        for node in fed.nodes.values()
        for e in node.audit.log.iter_entries()
        if e.kind is EventKind.SEARCH_REFUSED
    }
    coordinator = {
        e.event.reason
        for e in fed.coordinator.audit.log.iter_entries()
        if e.kind is EventKind.SEARCH_REFUSED
    }
    assert "permission_denied:PermissionDenied" in reasons
    assert "permission_denied:PermissionDenied" in coordinator


# -- certificates rotate without a restart ----------------------------------------------


def test_node_certificate_rotates_without_restart(fed: Federation) -> None:
    party = pki(fed.tmp)["node-IT"]
    out = party.tls.chain.parent
    coordinator = pki(fed.tmp)["coordinator"].tls
    address = fed.servers["IT"].address

    def info(name: str) -> grpc.StatusCode:
        channel = _channel(fed, coordinator, name, address)  # a new connection each time
        try:
            request = node_pb2.InfoRequest(header=header_to_pb(new_header("DE")))
            node_pb2_grpc.NodeServiceStub(channel).GetInfo(request, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()
        finally:
            channel.close()

    ca = fed.tmp / "pki" / "ca"
    assert info("node.it.fedmatch.eu") == grpc.StatusCode.OK
    assert info("b.node.it.fedmatch.eu") == grpc.StatusCode.UNAVAILABLE
    try:
        # The operator replaces the node's files; the running server picks them up.
        issue(ca, "node", "IT", "b", party.signing_key, out)
        assert info("b.node.it.fedmatch.eu") == grpc.StatusCode.OK
        assert info("node.it.fedmatch.eu") == grpc.StatusCode.UNAVAILABLE
    finally:
        issue(ca, "node", "IT", "", party.signing_key, out)
    assert info("node.it.fedmatch.eu") == grpc.StatusCode.OK


# -- a flood of bad requests does not stop honest ones ----------------------------------


@pytest.mark.slow
def test_honest_searches_succeed_during_a_flood(fed: Federation) -> None:
    import statistics
    import threading

    honest = fed.requester("FR")

    def honest_p50(n: int) -> float:
        times = []
        for i in range(n):
            header = honest.header(Purpose.ASYLUM_DUBLIN, "Reg. 2024/1358 Art. 27", f"F-{i}")
            t0 = time.perf_counter()
            report = honest.lookup(np.eye(128)[1], header, timeout=120)
            times.append(time.perf_counter() - t0)
            assert {n.outcome for n in report.nodes} == {"ok"}
        return statistics.median(times)

    honest_p50(1)  # keys registered, connections up
    quiet = honest_p50(5)
    stop = threading.Event()
    sent = {"malformed": 0, "oversize": 0, "no_cert": 0}
    codes: set[grpc.StatusCode] = set()
    garbage = bytes(range(256)) * 64
    oversize = b"\x00" * (MAX_RECEIVE_BYTES + 1024)

    def flood(kind: str) -> None:
        files = None if kind == "no_cert" else operator(fed, "DE")
        channel = _channel(fed, files, COORDINATOR_DNS, fed.coordinator_server.address)
        if kind == "no_cert":
            root = operator(fed, "DE").root.read_bytes()
            channel = grpc.secure_channel(
                fed.coordinator_server.address,
                grpc.ssl_channel_credentials(root_certificates=root),
                options=[("grpc.ssl_target_name_override", COORDINATOR_DNS),
                         ("grpc.max_send_message_length", -1)],
            )  # fmt: skip
        lookup = channel.unary_unary(
            "/fedmatch.rpc.v1.CoordinatorService/Lookup",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        payload = oversize if kind == "oversize" else garbage
        while not stop.is_set():
            try:
                lookup(payload, timeout=5)
            except grpc.RpcError as err:
                codes.add(err.code())
            sent[kind] += 1
        channel.close()

    threads = [threading.Thread(target=flood, args=(k,)) for k in sent]
    for t in threads:
        t.start()
    try:
        flooded = honest_p50(5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    print(
        f"\nhonest lookup p50: {quiet:.3f} s quiet, {flooded:.3f} s under a flood of "
        f"{sum(sent.values())} bad requests {sent}; codes seen: {sorted(c.name for c in codes)}"
    )
    assert sent["malformed"] > 0 and sent["oversize"] > 0 and sent["no_cert"] > 0
    assert codes <= {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


def test_health_service_and_graceful_shutdown(fed: Federation) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from node.servicer import serve_node
    from tests.federation import security

    # A second server for the Italian node, stopped at the end of this test.
    server = serve_node(fed.nodes["IT"], security(fed.tmp, "node-IT"), "127.0.0.1:0")
    channel = _channel(fed, pki(fed.tmp)["auditor-edps"].tls, dns_name("node", "IT"),
                       server.address)  # fmt: skip
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest()
    try:
        assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert server.health is not None
        server.health.enter_graceful_shutdown()
        status = health.Check(check, timeout=10).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        channel.close()
        server.stop(1.0)
    # Stopped: new calls are refused, the federation's own server is untouched.
    after = _channel(fed, pki(fed.tmp)["auditor-edps"].tls, dns_name("node", "IT"), server.address)
    err = refused(lambda: health_pb2_grpc.HealthStub(after).Check(check, timeout=3))
    after.close()
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_categories_not_asked_for_never_match(fed: Federation) -> None:
    from fedmatch.domain import Category
    from tests.federation import enrol

    rng = np.random.default_rng(11)
    person = rng.normal(size=128)
    person /= np.linalg.norm(person)
    enrol(fed.nodes["IT"], person, "IT-APPLICANT-1", Category.APPLICANT, dt.date(2026, 3, 1))
    everything = fed.requester("DE")
    narrow = fed.requester("DE", categories=("irregular_crossing", "illegal_stay"))
    basis = "Reg. 2024/1358 Art. 27"
    found = everything.lookup(person, everything.header(Purpose.ASYLUM_DUBLIN, basis, "C-1"))
    assert [s for s, _ in found.matches] == ["IT"]
    # The same person, searched only among irregular crossings and illegal stays: the
    # applicant record is excluded inside the encrypted search, so no match bit at all.
    narrowed = narrow.lookup(person, narrow.header(Purpose.ASYLUM_DUBLIN, basis, "C-2"))
    assert narrowed.matches == ()
    assert {n.outcome for n in narrowed.nodes} == {"ok"}


def test_keys_cannot_be_registered_for_another_state(fed: Federation) -> None:
    from fedmatch.protocol.wire import key_bundle_to_pb
    from fedmatch.rpc.v1 import common_pb2

    request = common_pb2.RegisterKeysRequest(
        header=header_to_pb(new_header("DE")),
        key_bundle=key_bundle_to_pb(shared_keys("DE").public_bundle()),
    )
    err = refused(
        lambda: coordinator_stub(fed, operator(fed, "FR")).RegisterKeys(request, timeout=60)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot register keys for DE" in (err.details() or "")
