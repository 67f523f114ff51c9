"""Two-person hit verification over real servers (mTLS, real HE, real logs): a hit's details
are asked for only with signed confirmations of two distinct verifiers of the requesting
state; a rejection is final and recorded; the node checks the verdicts itself; the waiver of
the second person is explicit, logged, and never covers a different-sex hit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509

from coordinator.config import CoordinatorConfig
from coordinator.verification import HitGate
from fedmatch.audit.entry import EventKind, SignedEntry
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, Purpose, Sex
from fedmatch.errors import ConfigError
from fedmatch.pki.ca import revoke
from fedmatch.protocol.verification import HitKey, SignedVerdict, VerdictSigner
from fedmatch.requester.client import LookupReport
from fedmatch.rpc.v1 import node_pb2
from node.config import NodeConfig
from tests.federation import (
    DIM,
    VERIFIERS,
    Federation,
    confirmations,
    enrol,
    expert,
    expert_name,
    federation,
    pki,
)

APPLICATION = "2026-11-21"
WAIVER = "Nat. implementing act 2026/77 s. 12 (second-person waiver, test)"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("verify"), ("DE", "IT", "FR"), records=30) as f:
        yield f


class Spy:
    """Counts the GetHitDetails calls a node serves (and lets them through)."""

    def __init__(self, target: Any) -> None:
        self.calls = 0
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._target(*args, **kwargs)


@pytest.fixture
def spy(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> Spy:
    node = fed.nodes["IT"]
    s = Spy(node.hit_details)
    monkeypatch.setattr(node, "hit_details", s)
    return s


def _candidate(fed: Federation, seed: int, sex: Sex = Sex.MALE) -> LookupReport:
    """A person enrolled at IT, looked up from DE: exactly one candidate hit."""
    rng = np.random.default_rng(seed)
    person = unit_vectors(rng, 1, DIM)[0]
    enrol(fed.nodes["IT"], capture(person, rng, 0.9), f"IT-V-{seed}",
          Category.IRREGULAR_CROSSING, dt.date(2026, 5, 1), sex=sex)  # fmt: skip
    report = fed.requester("DE").lookup(capture(person, rng, 0.9), _header(fed))
    assert len(report.matches) == 1 and report.matches[0][0] == "IT"
    return report


def _header(fed: Federation) -> Any:
    return fed.requester("DE").header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "V-1")


def _entries(fed: Federation, party: str, kind: EventKind, query_id: str) -> list[SignedEntry]:
    audit = fed.coordinator.audit if party == "coordinator" else fed.nodes[party].audit
    return [e for e in audit.log.iter_entries() if e.kind is kind and e.event.query_id == query_id]


def _denied(call: Callable[[], object], message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert message in (err.value.details() or ""), err.value.details()


def test_one_confirmation_or_the_same_person_twice_is_not_enough(fed: Federation, spy: Spy) -> None:
    report = _candidate(fed, 1)
    resolve = fed.requester("DE").resolve
    qid = report.header.query_id
    for people in (["anna"], ["anna", "anna"]):
        _denied(
            partial(resolve, report, APPLICATION, fed.verdicts(report, people)),
            "need 2 distinct verifiers' confirmations",
        )
    # Nothing was asked of the node, nothing revealed, nothing logged as verified.
    assert spy.calls == 0
    assert not _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, qid)
    assert not _entries(fed, "coordinator", EventKind.HIT_VERIFIED, qid)
    # Two distinct people: the details, and both names on both records.
    resolved = resolve(report, APPLICATION, fed.verdicts(report, ["anna", "ben"]))
    assert spy.calls == 1
    assert [h["reference"] for h in resolved.hits] == ["IT-V-1"]
    assert resolved.statuses[0]["status"] == "verified"
    assert resolved.statuses[0]["confirmed_by"] == list(VERIFIERS)
    (verified,) = _entries(fed, "coordinator", EventKind.HIT_VERIFIED, qid)
    (revealed,) = _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, qid)
    assert verified.event.verifiers == revealed.event.verifiers == VERIFIERS
    assert resolved.responsible_state == "IT"


def test_unauthorized_verdicts_are_refused(fed: Federation, spy: Spy) -> None:
    report = _candidate(fed, 2)
    qid, hit = report.header.query_id, HitKey(*report.matches[0])
    seen = fed.evidence(report)(hit)  # the packet's images, released to DE
    anna = expert(fed.tmp, "DE", "anna").confirm(qid, "DE", hit, seen)
    operator = pki(fed.tmp)["operator-DE"]
    ben = expert(fed.tmp, "DE", "ben").confirm(qid, "DE", hit, seen)
    forged = replace(ben, signature=bytes([ben.signature[0] ^ 1]) + ben.signature[1:])
    cases: list[tuple[SignedVerdict, str]] = [
        # An operator of the requesting state is not a verifier.
        (VerdictSigner(operator.signer(), operator.tls.chain.read_bytes())
         .confirm(qid, "DE", hit, seen),
         "signed by a operator of DE, not by an authorized verifier of DE"),
        # A verifier of another state (the owning state's, even) does not verify for DE.
        (expert(fed.tmp, "IT", "anna").confirm(qid, "DE", hit, seen),
         "signed by a verifier of IT, not by an authorized verifier of DE"),
        (forged, "a verdict signature does not verify"),
    ]  # fmt: skip
    for bad, message in cases:
        verdicts = [anna, bad]
        _denied(partial(fed.requester("DE").resolve, report, APPLICATION, verdicts), message)
    # A revoked verifier (carl's certificate on DE's CRL) is refused as well.
    carl = expert(fed.tmp, "DE", "carl")
    leaf = x509.load_pem_x509_certificates(carl.chain_pem)[0]
    revoke(fed.tmp / "pki" / "ca", "de", leaf.serial_number)
    _denied(
        lambda: fed.requester("DE").resolve(
            report, APPLICATION, [anna, carl.confirm(qid, "DE", hit, seen)]
        ),
        "revoked",
    )
    assert spy.calls == 0
    assert not _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, qid)
    # Each refusal is on the coordinator's record, with its reason class.
    refusals = _entries(fed, "coordinator", EventKind.REQUEST_REFUSED, qid)
    assert len(refusals) == 4
    assert {e.event.reason for e in refusals} == {"permission_denied:PermissionDenied"}


def test_the_node_checks_the_verdicts_itself(fed: Federation, spy: Spy) -> None:
    """On the coordinator's record is not enough: a hit-details request with too few (or
    foreign) verdicts, or naming other verifiers than the record, is refused by the node."""
    report = _candidate(fed, 3)
    hdr, handles = report.header, [report.matches[0][1]]
    hits = [("IT", handles[0])]

    def ask(verdicts: list[SignedVerdict], verifiers: tuple[str, ...] = VERIFIERS) -> object:
        return fed.details_at_node(report, verdicts, verifiers)

    seen = fed.evidence(report)  # the packet was released: verdicts bind its images
    one = confirmations(fed.tmp, hdr, hits, ["anna"], evidence=seen)
    _denied(lambda: ask([]), "need 2 distinct verifiers' signed confirmations")
    _denied(lambda: ask(one), "need 2 distinct verifiers' signed confirmations")
    again = confirmations(fed.tmp, hdr, hits, ["anna"], evidence=seen)
    _denied(lambda: ask(one + again), "need 2 distinct")
    hit = HitKey(*hits[0])
    foreign = expert(fed.tmp, "IT", "anna").confirm(hdr.query_id, "DE", hit, seen(hit))
    _denied(lambda: ask([*one, foreign]), "not by an authorized verifier of DE")
    # Valid verdicts of anna and ben, but the coordinator's record names someone else.
    two = confirmations(fed.tmp, hdr, hits, evidence=seen)
    _denied(
        lambda: ask(two, (expert_name("DE", "anna"), expert_name("DE", "carl"))),
        "names other verifiers",
    )
    assert spy.calls == 5
    assert not _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, hdr.query_id)
    reply = ask(two)
    assert isinstance(reply, node_pb2.HitDetailsResponse) and len(reply.hits) == 1
    (revealed,) = _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, hdr.query_id)
    assert revealed.event.verifiers == VERIFIERS


def test_a_rejected_hit_never_reveals_its_details(fed: Federation, spy: Spy) -> None:
    report = _candidate(fed, 4)
    qid, hit = report.header.query_id, HitKey(*report.matches[0])
    ben = expert(fed.tmp, "DE", "ben")
    verdicts = [
        *fed.verdicts(report, ["anna"]),
        ben.reject(qid, "DE", hit, fed.evidence(report)(hit), "different_person"),
    ]
    resolved = fed.requester("DE").resolve(report, APPLICATION, verdicts)
    assert resolved.hits == () and resolved.evidence == ()
    (status,) = resolved.statuses
    assert status["status"] == "rejected"
    assert status["rejected_by"] == [expert_name("DE", "ben")]
    assert status["reasons"] == ["different_person"]
    (rejected,) = _entries(fed, "coordinator", EventKind.HIT_REJECTED, qid)
    assert rejected.event.verifiers == (expert_name("DE", "ben"),)
    assert rejected.event.reason == "different_person"
    assert rejected.event.registers == ("IT",)
    assert hit.handle.hex() not in rejected.raw.decode()  # a digest, never the handle
    # A later resolve of the same query with two confirmations: still rejected.
    again = fed.requester("DE").resolve(report, APPLICATION, fed.verdicts(report))
    assert again.hits == () and again.statuses[0]["status"] == "rejected"
    assert len(_entries(fed, "coordinator", EventKind.HIT_REJECTED, qid)) == 1
    # Never asked of the node, never revealed; no hit_verified entry names it.
    assert spy.calls == 0
    assert not _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, qid)
    assert not _entries(fed, "coordinator", EventKind.HIT_VERIFIED, qid)
    # The rejection survives a restart: a gate rebuilt from the log still refuses it.
    rebuilt = HitGate(fed.coordinator.audit.log, fed.coordinator.gate.verify_chain, 2)
    screening = rebuilt.screen(report.header, [hit], fed.verdicts(report), "0" * 64)
    assert screening.verified == () and screening.assessments[0].status == "rejected"


def test_the_waiver_needs_a_legal_reference(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verification_waiver"):
        CoordinatorConfig(hit_verifiers_required=1)
    with pytest.raises(ConfigError, match="legal reference"):
        CoordinatorConfig(verification_waiver="\x00")
    with pytest.raises(ConfigError, match="verification_waiver"):
        NodeConfig("IT", tmp_path / "x.sqlite", hit_verifiers_required=1)
    assert CoordinatorConfig().confirmations_required == 2
    assert CoordinatorConfig(verification_waiver=WAIVER).confirmations_required == 1


def test_default_policy_logs_no_waiver(fed: Federation) -> None:
    (policy,) = [
        e for e in fed.coordinator.audit.log.iter_entries() if e.kind is EventKind.POLICY_CHANGED
    ]
    assert policy.event.labels["hit_verification_waiver"] == ""
    assert policy.event.labels["hit_verifiers_required"] == "2"


def test_under_the_waiver_a_different_sex_hit_still_needs_two(tmp_path: Path) -> None:
    with federation(tmp_path, ("DE", "IT"), records=20, waiver=WAIVER) as fed:
        # The waiver is on the record with its legal reference from the start.
        (policy,) = [
            e for e in fed.coordinator.audit.log.iter_entries()
            if e.kind is EventKind.POLICY_CHANGED
        ]  # fmt: skip
        assert policy.event.labels["hit_verification_waiver"] == WAIVER
        assert policy.event.labels["hit_verifiers_required"] == "1"
        node = fed.nodes["IT"]
        # So is each node's own (it applies the rule again before revealing anything).
        started = next(
            e for e in node.audit.log.iter_entries() if e.kind is EventKind.POLICY_CHANGED
        ).event.labels
        assert started["hit_verification_waiver"] == WAIVER
        assert started["hit_verifiers_required"] == "1"
        spy = Spy(node.hit_details)
        node.hit_details = spy  # type: ignore[method-assign]
        resolve = fed.requester("DE").resolve
        # A same-sex hit: one confirmation is enough under the waiver.
        same = _candidate(fed, 5, Sex.MALE)
        one = fed.verdicts(same, ["anna"], probe_sex=Sex.MALE)
        resolved = resolve(same, APPLICATION, one)
        assert [h["reference"] for h in resolved.hits] == ["IT-V-5"]
        assert resolved.statuses[0]["status"] == "verified"
        assert not resolved.statuses[0]["different_sex"]
        # A record of a woman for a probe declared male, one confirmation: held for review,
        # nothing revealed, flagged, and the decision is not complete.
        other = _candidate(fed, 6, Sex.FEMALE)
        qid = other.header.query_id
        held = resolve(other, APPLICATION, fed.verdicts(other, ["anna"], probe_sex=Sex.MALE))
        assert held.hits == () and held.evidence == () and not held.complete
        assert held.statuses[0]["status"] == "review"
        assert held.statuses[0]["different_sex"]
        (entry,) = _entries(fed, "IT", EventKind.HIT_DETAILS_REVEALED, qid)
        assert entry.event.outcome == "held_for_review"
        assert entry.event.labels["held_for_review"] == "1" and not entry.event.counts
        # Two people confirm it: revealed, still flagged as a different-sex hit.
        two = resolve(other, APPLICATION, fed.verdicts(other, probe_sex=Sex.MALE))
        assert [h["reference"] for h in two.hits] == ["IT-V-6"]
        assert two.statuses[0]["status"] == "verified" and two.statuses[0]["different_sex"]
        assert spy.calls == 3
        # No verifier declares the probe's sex: leaving it out cannot skip the review.
        silent = _candidate(fed, 7, Sex.FEMALE)
        quiet = resolve(silent, APPLICATION, fed.verdicts(silent, ["anna"]))
        assert quiet.hits == () and quiet.statuses[0]["status"] == "review"
        assert not quiet.statuses[0]["different_sex"]  # not known to differ: undeclared
        both = resolve(silent, APPLICATION, fed.verdicts(silent))
        assert [h["reference"] for h in both.hits] == ["IT-V-7"]
        # One verifier declares the sex, the other leaves it out: no contradiction.
        mixed = _candidate(fed, 8, Sex.MALE)
        qid = mixed.header.query_id
        hit = HitKey(*mixed.matches[0])
        seen = fed.evidence(mixed)(hit)
        verdicts = [
            expert(fed.tmp, "DE", "anna").confirm(qid, "DE", hit, seen, Sex.MALE),
            expert(fed.tmp, "DE", "ben").confirm(qid, "DE", hit, seen),
        ]
        assert [h["reference"] for h in resolve(mixed, APPLICATION, verdicts).hits] == ["IT-V-8"]
