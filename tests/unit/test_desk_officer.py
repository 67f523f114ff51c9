"""The official's steps (fedmatch.desk.officer) driven directly, with a stand-in for the
coordinator, and what a verifier is shown (fedmatch.desk.worklist): blind until their own
verdict, a reject deleting the image, verdicts bound to the images' hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from fedmatch.desk import officer, worklist
from fedmatch.desk.verdicts import all_verdicts, tallies
from fedmatch.errors import AlreadyExists, PermissionDenied, PreconditionFailed
from fedmatch.pki.ca import revoke
from fedmatch.pki.keystore import unlock
from fedmatch.pki.verify import load_crls, verify_peer
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.verification import VerdictStatement, assess_all
from tests.desk_case import (
    OFFICER,
    OFFICER_PASSPHRASE,
    PASSPHRASES,
    PROPOSAL_DIGEST,
    STATE,
    UNIT,
    DeskWorld,
    FakeRequester,
    build,
    unlocked_signer,
    verifier_name,
)


@pytest.fixture
def world(tmp_path: Path) -> DeskWorld:
    return build(tmp_path, officer=True)


def test_a_verifier_is_blind_to_the_others_until_their_own_verdict(world: DeskWorld) -> None:
    anna, ben = unlocked_signer(world, "anna"), unlocked_signer(world, "ben")
    hit = world.hits[0]
    worklist.sign(world.case, hit, anna, STATE)
    before = worklist.view(world.case, hit, ben.name, STATE)
    assert before.mine is None and before.tally is None
    assert [i.hit for i in worklist.pending(world.case, ben.name)] == list(world.hits)
    assert hit not in [i.hit for i in worklist.pending(world.case, anna.name)]
    worklist.sign(world.case, hit, ben, STATE)
    after = worklist.view(world.case, hit, ben.name, STATE)
    assert after.mine is not None and after.tally is not None
    assert after.tally.confirmed_by == (anna.name, ben.name)
    assert after.tally.status == "verified"


def test_a_reject_deletes_the_image_and_leaves_every_worklist(world: DeskWorld) -> None:
    anna, ben = unlocked_signer(world, "anna"), unlocked_signer(world, "ben")
    hit = world.hits[1]
    path = world.case.packets.image_path(hit)
    assert path is not None and path.exists()
    statement = worklist.sign(world.case, hit, anna, STATE, reject="different_person")
    assert statement.reason == "different_person"
    assert not path.exists()
    candidate = world.case.packets.candidate(hit)
    assert candidate.removed and candidate.image_sha256 == image_digest(world.images[hit])
    assert hit not in [i.hit for i in worklist.pending(world.case, ben.name)]
    with pytest.raises(PreconditionFailed, match="was rejected"):
        worklist.sign(world.case, hit, ben, STATE)


def test_the_verdicts_verify_and_name_the_images_compared(world: DeskWorld) -> None:
    for person in ("anna", "ben"):
        for hit in world.hits[:1]:
            worklist.sign(world.case, hit, unlocked_signer(world, person), STATE)
    worklist.sign(world.case, world.hits[2], unlocked_signer(world, "anna"), STATE, "data_error")
    tls = world.parties[f"verifier-anna-{STATE}"].tls
    root, crls = tls.root.read_bytes(), load_crls(tls.crls)
    signed = all_verdicts(world.case)
    assessed = assess_all(
        world.hits, signed, world.case.query_id, STATE, 2, lambda pem: verify_peer(pem, root, crls)
    )
    assert assessed[world.hits[0]].verified
    assert assessed[world.hits[2]].status == "rejected"
    for s in signed:
        statement = VerdictStatement.decode(s.statement)
        assert statement.probe_image == image_digest(world.probe_image)
        assert statement.candidate_image == image_digest(world.images[statement.hit])
    # The record without a facial image: its verdict names "no image".
    statements = [VerdictStatement.decode(s.statement) for s in signed]
    (rejected,) = [s for s in statements if s.hit == world.hits[2]]
    assert rejected.reason == "data_error" and rejected.candidate_image == ""


def _decide_all(world: DeskWorld) -> None:
    anna, ben = unlocked_signer(world, "anna"), unlocked_signer(world, "ben")
    worklist.sign(world.case, world.hits[0], anna, STATE)
    worklist.sign(world.case, world.hits[0], ben, STATE)
    worklist.sign(world.case, world.hits[1], ben, STATE, reject="different_person")
    worklist.sign(world.case, world.hits[2], anna, STATE, reject="insufficient_quality")


def test_status_resolve_and_confirm(world: DeskWorld) -> None:
    fake = FakeRequester()
    current = officer.status(world.case)
    assert not current.ready and [h.label for h in current.hits] == ["pending"] * 3
    with pytest.raises(PreconditionFailed, match="two confirmations or a rejection"):
        officer.resolve(world.case, fake.as_requester(), "2026-01-05")
    with pytest.raises(PreconditionFailed, match="resolve the lookup before"):
        officer.confirm(world.case, fake.as_requester(), OFFICER, UNIT)
    _decide_all(world)
    current = officer.status(world.case)
    assert current.ready
    assert [h.label for h in current.hits] == ["verified", "rejected", "rejected"]
    assert tallies(world.case)[world.hits[0]].confirmed_by == (
        verifier_name("anna"),
        verifier_name("ben"),
    )
    result = officer.resolve(world.case, fake.as_requester(), "2026-01-05")
    assert result["proposal"]["digest"] == PROPOSAL_DIGEST
    assert json.loads(world.case.resolve_path.read_text()) == result
    assert world.case.resolve_path.stat().st_mode & 0o077 == 0
    ((report, _, verdicts),) = fake.resolved
    assert report.matches == tuple((h.member_state, h.handle) for h in world.hits)
    assert report.opening is None and len(verdicts) == 4
    with pytest.raises(AlreadyExists):
        officer.resolve(world.case, fake.as_requester(), "2026-01-05")
    decision = officer.confirm(world.case, fake.as_requester(), OFFICER, UNIT)
    ((header, digest),) = fake.confirmed
    assert digest == PROPOSAL_DIGEST and header.operator == OFFICER and header.unit == UNIT
    assert decision["responsible_state"] == "IT"
    assert officer.status(world.case).decision == decision
    with pytest.raises(AlreadyExists):
        officer.confirm(world.case, fake.as_requester(), OFFICER, UNIT)


def test_the_officer_key_must_be_their_own_certificates(world: DeskWorld) -> None:
    """Issue 19 item 8: the official's requests are signed with the key of their own
    ``officer`` certificate; the workstation's key, another person's, or a revoked
    certificate are refused."""
    config = world.config.officer
    assert config is not None
    key = unlock(world.root / "keys" / "officer.key.enc", OFFICER_PASSPHRASE)
    assert officer.check_key(config, key) == STATE
    requester = officer.connect(config, key)
    requester.close()
    assert requester.operator == OFFICER and requester.signer.officer == OFFICER
    anna = unlock(world.root / "keys" / "anna.key.enc", PASSPHRASES["anna"])
    workstation = world.parties[f"operator-{STATE}"].signer()
    for other in (anna, workstation):
        with pytest.raises(PermissionDenied, match="binds another key"):
            officer.check_key(config, other)
        with pytest.raises(PermissionDenied, match="binds another key"):
            officer.connect(config, other)
    leaf = x509.load_pem_x509_certificates(config.chain_pem())[0]
    revoke(world.root / "pki" / "ca", STATE.lower(), leaf.serial_number)
    with pytest.raises(PermissionDenied, match="revoked"):
        officer.check_key(config, key)


def test_an_incomplete_lookup_is_refused_naming_the_states_unless_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: a lookup that FR did not answer may miss a record held there: the resolve
    names FR and refuses, unless the official accepts a provisional proposal (logged)."""
    world = build(tmp_path, officer=True, unanswered={"FR": "unavailable"})
    fake = FakeRequester()
    _decide_all(world)
    current = officer.status(world.case)
    assert current.ready and current.unanswered == {"FR": "unavailable"}
    assert current.incomplete == "FR did not answer (unavailable)"
    with pytest.raises(PreconditionFailed, match=r"FR did not answer \(unavailable\)"):
        officer.resolve(world.case, fake.as_requester(), "2026-01-05")
    assert not fake.resolved and not world.case.resolve_path.exists()
    with caplog.at_level("WARNING"):
        result = officer.resolve(
            world.case, fake.as_requester(), "2026-01-05", accept_incomplete=True
        )
    ((report, _, _),) = fake.resolved
    assert [(n.member_state, n.outcome) for n in report.nodes] == [("FR", "unavailable")]
    assert result["accepted_incomplete"] == {"FR": "unavailable"}
    assert result["decision"]["complete"] is False
    assert "FR did not answer" in result["decision"]["explanation"]
    accepted = [
        r.getMessage() for r in caplog.records if "accepted as incomplete" in r.getMessage()
    ]
    assert accepted and f"operator={OFFICER}" in accepted[0] and "FR did not answer" in accepted[0]
