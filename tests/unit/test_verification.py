"""Signed hit verdicts (fedmatch/protocol/verification.py) against a real federation PKI: who
may sign one, what one says, and what a hit's verdicts add up to."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from coordinator.verification import Screening, settle
from fedmatch.domain import Category, HitDetail, Sex
from fedmatch.errors import InvalidInput, PermissionDenied
from fedmatch.pki.ca import revoke
from fedmatch.protocol.transport import Security
from fedmatch.protocol.verification import (
    VERDICT_DOMAIN,
    Assessment,
    Evidence,
    HitKey,
    SignedVerdict,
    Verdict,
    VerdictSigner,
    VerdictStatement,
    assess,
    assess_all,
    different_sex,
    needs_two_people,
    read_verdicts,
    sign_verdict,
    verify_verdict,
    write_verdicts,
)
from tests.federation import expert, expert_name, pki

HIT = HitKey("IT", bytes.fromhex("0000000100000007"))
# The images a verifier compared: the probe's and the candidate's SHA-256.
SEEN = Evidence("a" * 64, "b" * 64)
OTHER_HIT = HitKey("FR", bytes.fromhex("0000000000000003"))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verdicts")
    pki(out)
    return out


def _verify_chain(tmp: Path) -> Security:
    # Any party's trust (root and CRLs) verifies a verdict's chain; the coordinator's here.
    return Security(pki(tmp)["coordinator"].tls)


def _qid() -> str:
    return secrets.token_hex(16)


def test_a_confirmation_verifies_and_names_its_signer(tmp: Path) -> None:
    qid = _qid()
    signed = expert(tmp, "DE", "anna").confirm(qid, "DE", HIT, SEEN, Sex.FEMALE)
    checked = verify_verdict(signed, qid, "DE", _verify_chain(tmp).verify_chain)
    assert checked.verifier == expert_name("DE", "anna") == "anna.verifier.de.fedmatch.eu"
    assert checked.statement.hit == HIT
    assert checked.statement.verdict is Verdict.CONFIRM
    assert checked.statement.probe_sex is Sex.FEMALE
    # Canonical JSON after its own domain prefix: one statement has exactly one encoding.
    assert VerdictStatement.decode(signed.statement).encode() == signed.statement
    assert json.loads(signed.statement)["handle"] == HIT.handle.hex()


def test_statements_must_be_canonical_and_complete(tmp: Path) -> None:
    signed = expert(tmp, "DE").confirm(_qid(), "DE", HIT, SEEN)
    obj = json.loads(signed.statement)
    with pytest.raises(InvalidInput, match="not canonical"):
        VerdictStatement.decode(json.dumps(obj, indent=1).encode())
    with pytest.raises(InvalidInput, match="unknown fields"):
        VerdictStatement.decode(json.dumps({**obj, "extra": "x"}, sort_keys=True).encode())
    with pytest.raises(InvalidInput, match="wrong type"):
        VerdictStatement.decode(json.dumps({**obj, "issued_ms": "1"}, sort_keys=True).encode())
    with pytest.raises(InvalidInput, match="not JSON"):
        VerdictStatement.decode(b"\xff")


def test_a_reject_needs_a_reason_code_and_a_confirmation_has_none(tmp: Path) -> None:
    signer = expert(tmp, "DE")
    with pytest.raises(InvalidInput, match="reason code"):
        signer.reject(_qid(), "DE", HIT, SEEN, "looks different to me")
    with pytest.raises(InvalidInput, match="no reason"):
        sign_verdict(signer.key, signer.chain_pem, signer.name, _qid(), "DE", HIT, SEEN,
                     Verdict.CONFIRM, Sex.MALE, reason="different_person")  # fmt: skip
    rejected = signer.reject(_qid(), "DE", HIT, SEEN, "different_person")
    assert VerdictStatement.decode(rejected.statement).reason == "different_person"


def test_only_verifiers_of_the_requesting_state_may_sign(tmp: Path) -> None:
    verify_chain = _verify_chain(tmp).verify_chain
    qid = _qid()
    # Another state's verifier: refused for a DE query.
    italian = expert(tmp, "IT", "anna").confirm(qid, "DE", HIT, SEEN)
    with pytest.raises(
        PermissionDenied, match="verifier of IT, not by an authorized verifier of DE"
    ):
        verify_verdict(italian, qid, "DE", verify_chain)
    # An operator's workstation of DE (its key is bound into an operator certificate).
    operator = pki(tmp)["operator-DE"]
    as_operator = VerdictSigner(operator.signer(), operator.tls.chain.read_bytes())
    with pytest.raises(PermissionDenied, match="operator of DE, not by an authorized verifier"):
        verify_verdict(as_operator.confirm(qid, "DE", HIT, SEEN), qid, "DE", verify_chain)
    # A verdict for another query is not one for this query.
    with pytest.raises(PermissionDenied, match="another query"):
        verify_verdict(expert(tmp, "DE").confirm(_qid(), "DE", HIT, SEEN), qid, "DE", verify_chain)


def test_forged_and_mismatched_verdicts_are_refused(tmp: Path) -> None:
    verify_chain = _verify_chain(tmp).verify_chain
    qid = _qid()
    anna, ben = expert(tmp, "DE", "anna"), expert(tmp, "DE", "ben")
    signed = anna.confirm(qid, "DE", HIT, SEEN)
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        verify_verdict(replace(signed, signature=flipped), qid, "DE", verify_chain)
    # A confirmation turned into a rejection (or the other way) breaks the signature.
    body = signed.statement.replace(b'"confirm"', b'"reject"').replace(
        b'"reason":""', b'"reason":"inconclusive"'
    )
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        verify_verdict(replace(signed, statement=body), qid, "DE", verify_chain)
    # Ben's signature presented with Anna's certificate: the key is not the certificate's.
    by_ben = sign_verdict(ben.key, anna.chain_pem, anna.name, qid, "DE", HIT, SEEN,
                          Verdict.CONFIRM, Sex.UNSPECIFIED)  # fmt: skip
    with pytest.raises(PermissionDenied, match="key its certificate does not carry"):
        verify_verdict(by_ben, qid, "DE", verify_chain)
    # Anna's key and certificate, claiming to be Ben.
    as_ben = sign_verdict(anna.key, anna.chain_pem, ben.name, qid, "DE", HIT, SEEN,
                          Verdict.CONFIRM, Sex.UNSPECIFIED)  # fmt: skip
    with pytest.raises(PermissionDenied, match="another verifier than its certificate"):
        verify_verdict(as_ben, qid, "DE", verify_chain)
    # A verdict signed with the request domain (or any other) is no verdict.
    wrong_domain = SignedVerdict(
        signed.statement, anna.key.sign(b"fedmatch/request/v1\x00" + signed.statement),
        signed.signer_chain,
    )  # fmt: skip
    assert not wrong_domain.signature == anna.key.sign(VERDICT_DOMAIN + signed.statement)
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        verify_verdict(wrong_domain, qid, "DE", verify_chain)
    # Dated far in the future.
    late = sign_verdict(anna.key, anna.chain_pem, anna.name, qid, "DE", HIT, SEEN,
                        Verdict.CONFIRM, Sex.UNSPECIFIED, issued_ms=2**45)  # fmt: skip
    with pytest.raises(PermissionDenied, match="future"):
        verify_verdict(late, qid, "DE", verify_chain)


def test_a_revoked_verifier_is_refused(tmp_path: Path) -> None:
    parties = pki(tmp_path)
    qid = _qid()
    signed = expert(tmp_path, "DE", "carl").confirm(qid, "DE", HIT, SEEN)
    trust = _verify_chain(tmp_path)
    verify_verdict(signed, qid, "DE", trust.verify_chain)  # valid until revoked
    leaf = x509.load_pem_x509_certificates(parties["verifier-carl-DE"].tls.chain.read_bytes())[0]
    revoke(tmp_path / "pki" / "ca", "de", leaf.serial_number)
    with pytest.raises(PermissionDenied, match="revoked"):
        verify_verdict(signed, qid, "DE", trust.verify_chain)


def test_two_distinct_people_verify_a_hit(tmp: Path) -> None:
    verify_chain = _verify_chain(tmp).verify_chain
    qid = _qid()
    anna, ben = expert(tmp, "DE", "anna"), expert(tmp, "DE", "ben")

    def checked(*signed: SignedVerdict) -> list:  # type: ignore[type-arg]
        return [verify_verdict(s, qid, "DE", verify_chain) for s in signed]

    one = checked(anna.confirm(qid, "DE", HIT, SEEN))
    assert assess(HIT, one, 2).status == "pending"
    # The same person twice (two verdicts, two nonces) counts once.
    twice = checked(anna.confirm(qid, "DE", HIT, SEEN), anna.confirm(qid, "DE", HIT, SEEN))
    assert assess(HIT, twice, 2).status == "pending"
    assert assess(HIT, twice, 2).confirmed_by == (anna.name,)
    two = checked(anna.confirm(qid, "DE", HIT, SEEN), ben.confirm(qid, "DE", HIT, SEEN))
    result = assess(HIT, two, 2)
    assert result.verified and result.confirmed_by == (anna.name, ben.name)
    # Confirmations of another hit do not count for this one.
    assert assess(OTHER_HIT, two, 2).status == "pending"
    # Under a waiver one person is enough; nothing else changes.
    assert assess(HIT, one, 1).verified
    # Any rejection wins over any number of confirmations.
    vetoed = two + checked(
        expert(tmp, "DE", "carl").reject(qid, "DE", HIT, SEEN, "different_person")
    )
    rejected = assess(HIT, vetoed, 2)
    assert rejected.status == "rejected"
    assert rejected.rejected_by == (expert_name("DE", "carl"),)
    assert rejected.reasons == ("different_person",)
    # People disagreeing on the probe's declared sex is an error, not a vote.
    mixed = checked(
        anna.confirm(qid, "DE", HIT, SEEN, Sex.MALE), ben.confirm(qid, "DE", HIT, SEEN, Sex.FEMALE)
    )
    with pytest.raises(InvalidInput, match="different sexes"):
        assess(HIT, mixed, 2)
    # One declaring nothing does not contradict one who declares.
    partial = checked(
        anna.confirm(qid, "DE", HIT, SEEN, Sex.MALE), ben.confirm(qid, "DE", HIT, SEEN)
    )
    assert assess(HIT, partial, 2).probe_sex is Sex.MALE
    # Under the waiver an undeclared probe sex still needs two people for a record of known sex.
    assert needs_two_people(Sex.FEMALE, Sex.UNSPECIFIED) and needs_two_people(Sex.FEMALE, Sex.MALE)
    assert not needs_two_people(Sex.MALE, Sex.MALE)
    assert not needs_two_people(Sex.UNSPECIFIED, Sex.UNSPECIFIED)


def test_assess_all_refuses_a_verdict_on_a_hit_not_asked_about(tmp: Path) -> None:
    verify_chain = _verify_chain(tmp).verify_chain
    qid = _qid()
    verdicts = [expert(tmp, "DE", p).confirm(qid, "DE", HIT, SEEN) for p in ("anna", "ben")]
    assert assess_all([HIT], verdicts, qid, "DE", 2, verify_chain)[HIT].verified
    assert (
        assess_all([HIT, OTHER_HIT], verdicts, qid, "DE", 2, verify_chain)[OTHER_HIT].status
        == "pending"
    )
    with pytest.raises(InvalidInput, match="not in this request"):
        assess_all([OTHER_HIT], verdicts, qid, "DE", 2, verify_chain)


def test_different_sex_needs_both_sexes_known() -> None:
    assert different_sex(Sex.MALE, Sex.FEMALE)
    assert not different_sex(Sex.MALE, Sex.MALE)
    assert not different_sex(Sex.UNSPECIFIED, Sex.FEMALE)
    assert not different_sex(Sex.FEMALE, Sex.UNSPECIFIED)


def test_verdict_files_round_trip_and_bad_ones_are_named(tmp: Path, tmp_path: Path) -> None:
    qid = _qid()
    signed = [
        expert(tmp, "DE").reject(qid, "DE", HIT, SEEN, "insufficient_quality"),
        expert(tmp, "DE", "ben").confirm(qid, "DE", OTHER_HIT, SEEN),
    ]
    path = tmp_path / "verdicts.json"
    write_verdicts(signed, path)
    assert read_verdicts(path) == signed
    for verdict in read_verdicts(path):
        verify_verdict(verdict, qid, "DE", _verify_chain(tmp).verify_chain)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(InvalidInput, match="not a fedmatch hit verdict file"):
        read_verdicts(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text(
        '{"format": "fedmatch-hit-verdicts-v1", "verdicts": [{}]}'
    )
    with pytest.raises(InvalidInput, match="malformed"):
        read_verdicts(tmp_path / "broken.json")
    with pytest.raises(InvalidInput, match="could not be read"):
        read_verdicts(tmp_path / "missing.json")


def _detail(hit: HitKey, sex: Sex) -> HitDetail:
    return HitDetail(
        hit.member_state, hit.handle, Category.IRREGULAR_CROSSING, f"{hit.member_state}-1",
        dt.date(2026, 5, 1), "Lampedusa", dt.date(2026, 5, 1), sex,
    )  # fmt: skip


def _assessment(hit: HitKey, status: str, people: int, probe_sex: Sex) -> Assessment:
    names = tuple(expert_name("DE", p) for p in ("anna", "ben")[:people])
    return Assessment(hit, status, names, (), (), probe_sex)


def test_settle_keeps_only_usable_details() -> None:
    """What reaches the decision after the nodes answered: never a pending or rejected hit,
    and never a different-sex hit on one confirmation, even should a node reveal it."""
    same, other, held, pending = (
        HitKey("IT", bytes([0, 0, 0, 0, 0, 0, 0, i])) for i in range(4)
    )  # fmt: skip
    screening = Screening((
        _assessment(same, "verified", 1, Sex.MALE),
        _assessment(other, "verified", 1, Sex.MALE),
        _assessment(held, "verified", 1, Sex.MALE),
        _assessment(pending, "pending", 1, Sex.MALE),
    ))  # fmt: skip
    details = [_detail(same, Sex.MALE), _detail(other, Sex.FEMALE), _detail(pending, Sex.MALE)]
    usable, outcomes = settle(screening, details, [held])
    assert usable == [details[0]]
    assert [(o.status, o.different_sex) for o in outcomes] == [
        ("verified", False), ("review", True), ("review", True), ("pending", False),
    ]  # fmt: skip
    # Two people: a different-sex hit is usable, and still flagged.
    two = Screening((_assessment(other, "verified", 2, Sex.MALE),))
    usable, outcomes = settle(two, [details[1]], [])
    assert usable == [details[1]] and outcomes[0].different_sex
