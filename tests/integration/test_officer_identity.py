"""Personal officer identity (issue 19, item 8): every signed request is signed by the key
of an officer's own certificate (``officer-1.officer.de.fedmatch.eu``), and the operator id
it names is that certificate's; the operator workstation's certificate only makes the mTLS
channel. Each refusal is exact (PERMISSION_DENIED) and on the refusing party's record."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509

from fedmatch.audit.entry import EventKind, SignedEntry, digest_hex
from fedmatch.audit.note import NoteSigner
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, EncryptedProbe, Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.pki.ca import issue, revoke
from fedmatch.pki.names import dns_name
from fedmatch.protocol.statement import RequestSigner, SignedRequest, sign_request
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, probe_to_pb
from fedmatch.requester import Requester
from fedmatch.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from tests.federation import (
    DIM,
    MODEL,
    OPERATOR,
    OTHER_OFFICER,
    UNIT,
    Federation,
    enrol,
    federation,
    request_signer,
    search_authorized,
    security,
    shared_keys,
    workstation_signer,
)

APPLICATION = "2026-11-21"
Sign = Callable[[QueryHeader, str], SignedRequest]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("officers"), ("DE", "IT", "FR"), records=30) as f:
        for state in ("DE", "FR"):
            f.requester(state).register_keys(_header(state))
        yield f


def _header(state: str, operator: str = OPERATOR) -> QueryHeader:
    return QueryHeader(
        secrets.token_hex(16), state, Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27",
        "C-OFFICER", UNIT, operator,
    )  # fmt: skip


def _probe(state: str) -> EncryptedProbe:
    keys = shared_keys(state)
    return EncryptedProbe(
        keys.params.name, keys.encrypt_probe(np.eye(DIM)[0]), MODEL, DIM, keys.key_id
    )


def _lookup(fed: Federation, header: QueryHeader, sign: Sign) -> coordinator_pb2.LookupResponse:
    """A lookup of ``header`` signed by ``sign``, over the DE workstation's channel."""
    probe = _probe(header.requesting_state)
    signed = sign(header, digest_hex(probe.ciphertext))
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(fed.coordinator_channel("operator-DE"))
    request = coordinator_pb2.LookupRequest(
        header=header_to_pb(header, signed), probe=probe_to_pb(probe)
    )
    response: coordinator_pb2.LookupResponse = stub.Lookup(request, timeout=30)
    return response


def _signed_by(signer: RequestSigner) -> Sign:
    """Sign exactly the header given, whatever officer it names (what a forger sends)."""
    return lambda header, probe_hash: sign_request(
        signer.key, signer.chain_pem, header, "lookup", signer.categories, probe_hash
    )


def _entries(fed: Federation, party: str, kind: EventKind, query_id: str) -> list[SignedEntry]:
    audit = fed.coordinator.audit if party == "coordinator" else fed.nodes[party].audit
    return [e for e in audit.log.iter_entries() if e.kind is kind and e.event.query_id == query_id]


def _refused(fed: Federation, header: QueryHeader, sign: Sign, message: str) -> None:
    """The lookup is refused with ``message``, logged as refused, and sent to no node."""
    with pytest.raises(grpc.RpcError) as err:
        _lookup(fed, header, sign)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert message in (err.value.details() or ""), err.value.details()
    qid = header.query_id
    (refusal,) = _entries(fed, "coordinator", EventKind.SEARCH_REFUSED, qid)
    assert refusal.event.reason == "permission_denied:PermissionDenied"
    assert not _entries(fed, "coordinator", EventKind.SEARCH_AUTHORIZED, qid)
    for state in ("IT", "FR"):
        assert not [e for e in fed.nodes[state].audit.log.iter_entries() if e.event.query_id == qid]


def test_a_request_signed_with_the_workstation_key_is_refused(fed: Federation) -> None:
    workstation = workstation_signer(fed.tmp, "DE")
    _refused(
        fed, _header("DE"), _signed_by(workstation),
        "request signed by a operator of DE, not by an officer of DE",
    )  # fmt: skip


def test_a_request_naming_another_officer_than_its_signer_is_refused(fed: Federation) -> None:
    officer_1 = request_signer(fed.tmp, "DE", OPERATOR)
    _refused(
        fed, _header("DE", OTHER_OFFICER), _signed_by(officer_1),
        "request names another officer than the one who signed it",
    )  # fmt: skip
    # Free text names nobody either.
    _refused(
        fed, _header("DE", "desk-clerk"), _signed_by(officer_1),
        "request names another officer than the one who signed it",
    )  # fmt: skip
    # The library does not even sign such a request.
    with pytest.raises(InvalidInput, match="signed by officer 'officer-1'"):
        officer_1.sign(_header("DE", OTHER_OFFICER), "lookup", "00" * 32)


def test_an_officer_of_another_state_is_refused(fed: Federation) -> None:
    french = request_signer(fed.tmp, "FR", OPERATOR)
    _refused(
        fed, _header("DE"), _signed_by(french),
        "request signed by a officer of FR, not by an officer of DE",
    )  # fmt: skip


def test_a_revoked_officer_certificate_is_refused(fed: Federation, tmp_path: Path) -> None:
    key = NoteSigner.generate(dns_name("officer", "DE", "olga"))
    files = issue(fed.tmp / "pki" / "ca", "officer", "DE", "olga", key, tmp_path / "olga")
    olga = RequestSigner(key, files.chain.read_bytes())
    assert olga.officer == "olga"
    answered = _lookup(fed, _header("DE", "olga"), _signed_by(olga))
    assert len(answered.nodes) == 2
    leaf = x509.load_pem_x509_certificates(files.chain.read_bytes())[0]
    revoke(fed.tmp / "pki" / "ca", "de", leaf.serial_number)
    _refused(fed, _header("DE", "olga"), _signed_by(olga), "revoked")


def test_a_node_refuses_a_search_the_workstation_signed(fed: Federation) -> None:
    """Not on the coordinator's word alone: a search on record whose request the
    workstation key signed (a coordinator that let it through) is refused by the node."""
    header = _header("DE")
    probe = _probe("DE")
    signed = _signed_by(workstation_signer(fed.tmp, "DE"))(header, digest_hex(probe.ciphertext))
    event = search_authorized(header, probe.ciphertext, probe.key_id, ["IT"], signed=signed)
    request = node_pb2.SearchRequest(
        header=header_to_pb(header, signed),
        probe=probe_to_pb(probe),
        threshold_version=fed.nodes["IT"].config.threshold_version,
        authorization=authorization_to_pb(fed.authorize(event, ["IT"])),
    )
    stub = node_pb2_grpc.NodeServiceStub(fed.node_channel("IT"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not by an officer of DE" in (err.value.details() or "")
    (refusal,) = _entries(fed, "IT", EventKind.SEARCH_REFUSED, header.query_id)
    assert refusal.event.reason == "permission_denied:PermissionDenied"


def test_officer_signed_lookup_and_resolve_log_the_certificates_officer(fed: Federation) -> None:
    """officer-1 looks up, officer-2 (another person, at the same workstation) resolves:
    each party's log names the officer whose certificate signed each request, and a
    requester cannot name another operator than its officer."""
    rng = np.random.default_rng(19)
    person = unit_vectors(rng, 1, DIM)[0]
    enrol(fed.nodes["IT"], capture(person, rng, 0.9), "IT-OFFICER-1",
          Category.IRREGULAR_CROSSING, dt.date(2026, 5, 1))  # fmt: skip
    looker = fed.requester("DE", OPERATOR)
    header = looker.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-OFF-2")
    report = looker.lookup(capture(person, rng, 0.9), header)
    assert [s for s, _ in report.matches] == ["IT"]
    qid = report.header.query_id
    resolver = fed.requester("DE", OTHER_OFFICER)
    resolved = resolver.resolve(report, APPLICATION, fed.verdicts(report))
    assert resolved.responsible_state == "IT"

    def operators(party: str, kind: EventKind) -> set[str]:
        return {e.event.operator for e in _entries(fed, party, kind, qid)}

    assert operators("coordinator", EventKind.SEARCH_AUTHORIZED) == {OPERATOR}
    assert operators("IT", EventKind.SEARCH_ANSWERED) == {OPERATOR}
    assert operators("coordinator", EventKind.HIT_VERIFIED) == {OTHER_OFFICER}
    assert operators("coordinator", EventKind.DECISION_PROPOSED) == {OTHER_OFFICER}
    assert operators("IT", EventKind.HIT_DETAILS_REVEALED) == {OTHER_OFFICER}
    with pytest.raises(InvalidInput, match="not the officer whose certificate signs"):
        Requester(
            fed.coordinator_server.address, "DE", shared_keys("DE"), UNIT, "someone-else",
            request_signer(fed.tmp, "DE", OPERATOR),
            security(fed.tmp, "operator-DE").channel_credentials(),
        )  # fmt: skip
    # The officer id comes from the certificate when the caller gives none.
    blank = Requester(
        fed.coordinator_server.address, "DE", shared_keys("DE"), UNIT, "",
        request_signer(fed.tmp, "DE", OTHER_OFFICER),
        security(fed.tmp, "operator-DE").channel_credentials(),
    )  # fmt: skip
    blank.close()
    assert blank.operator == OTHER_OFFICER
