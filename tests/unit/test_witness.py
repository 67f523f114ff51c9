"""A node witnessing the coordinator's log (fedmatch.audit.witness): cosigning only consistent
checkpoints, keeping evidence of forks, persisting its view, and refusing requests whose
coordinator entry is not in a checkpoint it verified."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmatch.audit.entry import MAX_ENTRY_BYTES, AuditEvent, EventKind, encode_entry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import LOG_FILE, AuditLog
from fedmatch.audit.merkle import EMPTY_ROOT, HASH_SIZE
from fedmatch.audit.note import (
    Checkpoint,
    Note,
    NoteSigner,
    add_signature,
    cosignatures,
    sign_note,
    verify_cosignature,
)
from fedmatch.audit.witness import Authorization, Witness, WitnessAnswer
from fedmatch.errors import InvalidInput, PermissionDenied, PreconditionFailed

COORD = "fedmatch/coordinator"
COORD_SIGNER = NoteSigner.generate(COORD)
NODE_SIGNER = NoteSigner.generate("fedmatch/node/IT")
NODE_COSIGNER = NODE_SIGNER.cosignature_verifier()
NOW = 1_767_225_600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(i: int, tag: str = "") -> AuditEvent:
    return AuditEvent(
        EventKind.SEARCH_AUTHORIZED,
        query_id=f"q-{tag}{i}",
        requesting_state="DE",
        registers=("IT",),
    )


def grow(log: AuditLog, to: int, tag: str = "") -> bytes:
    """Append until the log has ``to`` entries; its checkpoint at that size."""
    while log.size < to:
        log.append(event(log.size, tag))
    return log.checkpoint()


def body(note: bytes) -> bytes:
    return Note.parse(note).body


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "coordinator", COORD_SIGNER, COORD)
    yield log
    log.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def make_witness(tmp_path: Path, clock: Clock) -> Witness:
    return Witness(
        tmp_path / "witness" / "state.json",
        tmp_path / "evidence",
        COORD_SIGNER.verifier(),
        COORD,
        NODE_SIGNER,
        clock,
    )


@pytest.fixture
def witness(tmp_path: Path, clock: Clock) -> Witness:
    return make_witness(tmp_path, clock)


def accepted(answer: WitnessAnswer, note: bytes, size: int) -> int:
    """Check an accepting answer; the cosignature's timestamp."""
    assert not answer.conflict
    assert answer.witnessed_size == size
    assert answer.cosignature is not None
    return verify_cosignature(body(note), answer.cosignature, NODE_COSIGNER)


def evidence_files(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "evidence"
    return sorted(directory.iterdir()) if directory.exists() else []


# --- witnessing --------------------------------------------------------------------------------


def test_first_checkpoint_is_accepted_and_cosigned(
    coord: AuditLog, witness: Witness, clock: Clock
) -> None:
    note = grow(coord, 5)
    assert witness.witnessed_size == 0
    answer = witness.add_checkpoint(0, [], note)
    assert accepted(answer, note, 5) == int(NOW)
    assert witness.witnessed_size == 5
    assert witness.root_for(5) == coord.root(5)
    assert witness.root_for(4) is None
    # The cosignature is a C2SP cosignature/v1 line anyone can check with the node's key...
    assert answer.cosignature is not None
    cosigned = add_signature(
        note, answer.cosignature.name, answer.cosignature.key_id, answer.cosignature.value
    )
    assert cosignatures(Note.parse(cosigned), [NODE_COSIGNER]) == {NODE_SIGNER.name: int(NOW)}
    # ...and with nobody else's, nor over another checkpoint.
    with pytest.raises(AuditVerificationError, match="signature is not by cosigner"):
        verify_cosignature(
            body(note), answer.cosignature, NoteSigner.generate("x").cosignature_verifier()
        )
    other = Checkpoint(COORD, 5, EMPTY_ROOT).body()
    with pytest.raises(AuditVerificationError, match="does not verify"):
        verify_cosignature(other, answer.cosignature, NODE_COSIGNER)


def test_first_contact_must_claim_size_zero(
    tmp_path: Path, coord: AuditLog, witness: Witness
) -> None:
    note = grow(coord, 5)
    assert witness.add_checkpoint(3, coord.consistency_proof(3, 5), note) == WitnessAnswer(
        True, 0, None
    )
    assert witness.witnessed_size == 0
    assert not (tmp_path / "witness" / "state.json").exists()


def test_empty_first_checkpoint_then_growth(coord: AuditLog, witness: Witness) -> None:
    empty = coord.checkpoint()
    accepted(witness.add_checkpoint(0, [], empty), empty, 0)
    assert witness.root_for(0) == EMPTY_ROOT
    note = grow(coord, 3)
    with pytest.raises(PreconditionFailed, match="not consistent"):
        witness.add_checkpoint(0, [coord.root(3)], note)  # from empty, the proof is empty
    accepted(witness.add_checkpoint(0, [], note), note, 3)


def test_growing_checkpoints_with_consistency_proofs(coord: AuditLog, witness: Witness) -> None:
    previous = 0
    for size in (1, 2, 5, 8, 9, 16, 17, 40):
        note = grow(coord, size)
        proof = coord.consistency_proof(previous, size) if previous else []
        accepted(witness.add_checkpoint(previous, proof, note), note, size)
        assert witness.witnessed_size == size
        assert witness.root_for(size) == coord.root(size)
        previous = size
    # The same checkpoint again is simply cosigned again.
    note = coord.checkpoint()
    accepted(witness.add_checkpoint(40, [], note), note, 40)
    # Every verified size is still known.
    for size in (1, 2, 5, 8, 9, 16, 17, 40):
        assert witness.root_for(size) == coord.root(size)


def test_wrong_old_size_gets_a_conflict_with_the_witnessed_size(
    coord: AuditLog, witness: Witness
) -> None:
    first = grow(coord, 5)
    witness.add_checkpoint(0, [], first)
    note = grow(coord, 9)
    for old_size in (0, 3, 6, 9):
        proof = coord.consistency_proof(old_size, 9)
        assert witness.add_checkpoint(old_size, proof, note) == WitnessAnswer(True, 5, None)
    assert witness.witnessed_size == 5
    assert witness.root_for(9) is None
    accepted(witness.add_checkpoint(5, coord.consistency_proof(5, 9), note), note, 9)


def test_late_smaller_checkpoint_proved_a_prefix_is_accepted(
    tmp_path: Path, coord: AuditLog, witness: Witness
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 4))
    late = grow(coord, 9)  # published, but reaches the witness after a later one
    latest = grow(coord, 14)
    accepted(witness.add_checkpoint(4, coord.consistency_proof(4, 14), latest), latest, 14)
    assert witness.root_for(9) is None
    answer = witness.add_checkpoint(14, coord.consistency_proof(9, 14), late)
    accepted(answer, late, 14)  # cosigns the late checkpoint, reports the latest size
    assert witness.root_for(9) == coord.root(9)
    assert witness.witnessed_size == 14
    assert evidence_files(tmp_path) == []


def test_late_smaller_checkpoint_with_a_bad_proof_is_refused(
    tmp_path: Path, coord: AuditLog, witness: Witness
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 4))
    late = grow(coord, 9)
    latest = grow(coord, 14)
    witness.add_checkpoint(4, coord.consistency_proof(4, 14), latest)
    with pytest.raises(PreconditionFailed, match=r"size 9 is not consistent with .* size 14"):
        witness.add_checkpoint(14, coord.consistency_proof(8, 14), late)
    assert witness.root_for(9) is None
    assert len(evidence_files(tmp_path)) == 1


def test_empty_checkpoint_after_growth(coord: AuditLog, witness: Witness, tmp_path: Path) -> None:
    empty = coord.checkpoint()
    note = grow(coord, 3)
    witness.add_checkpoint(0, [], note)
    accepted(witness.add_checkpoint(3, [], empty), empty, 3)
    assert witness.root_for(0) == EMPTY_ROOT
    assert evidence_files(tmp_path) == []


def test_forked_log_is_refused_with_evidence(
    tmp_path: Path, coord: AuditLog, witness: Witness
) -> None:
    cosigned = grow(coord, 5)
    witness.add_checkpoint(0, [], cosigned)
    # The same coordinator key signs a second history that shares nothing with the first.
    fork = AuditLog(tmp_path / "fork", COORD_SIGNER, COORD)
    try:
        presented = grow(fork, 8, tag="fork-")
        proof = fork.consistency_proof(5, 8)
        with pytest.raises(
            PreconditionFailed,
            match="size 8 is not consistent with the one of size 5 this node cosigned; evidence",
        ):
            witness.add_checkpoint(5, proof, presented)
    finally:
        fork.close()
    assert witness.witnessed_size == 5
    assert witness.root_for(8) is None
    assert witness.root_for(5) == coord.root(5)
    [path] = evidence_files(tmp_path)
    evidence = json.loads(path.read_text())
    assert evidence["cosigned_checkpoint"] == cosigned.decode()
    assert evidence["presented_checkpoint"] == presented.decode()
    assert evidence["consistency_proof"] == [base64.b64encode(h).decode() for h in proof]
    assert "does not lead to the old root" in evidence["reason"]
    # The honest log still extends what was cosigned.
    note = grow(coord, 8)
    accepted(witness.add_checkpoint(5, coord.consistency_proof(5, 8), note), note, 8)


def test_fork_at_a_known_size_is_refused_with_evidence(
    tmp_path: Path, coord: AuditLog, witness: Witness, clock: Clock
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 3))
    cosigned = grow(coord, 6)
    witness.add_checkpoint(3, coord.consistency_proof(3, 6), cosigned)
    fork = AuditLog(tmp_path / "fork", COORD_SIGNER, COORD)
    try:
        same_size = grow(fork, 6, tag="fork-")
        with pytest.raises(PreconditionFailed, match="size 6 is not consistent"):
            witness.add_checkpoint(6, [], same_size)
        # A second refusal in the same millisecond must not overwrite the first evidence.
        with pytest.raises(PreconditionFailed, match="size 6 is not consistent"):
            witness.add_checkpoint(6, [], same_size)
    finally:
        fork.close()
    files = evidence_files(tmp_path)
    assert len(files) == 2
    for path in files:
        evidence = json.loads(path.read_text())
        assert "two checkpoints of size 6 with different roots" in evidence["reason"]
        assert evidence["cosigned_checkpoint"] == cosigned.decode()
        assert evidence["presented_checkpoint"] == same_size.decode()
        assert evidence["consistency_proof"] == []
    assert witness.root_for(6) == coord.root(6)


@pytest.mark.parametrize("how", ["other-key", "other-origin", "unsigned", "garbage"])
def test_checkpoint_not_signed_by_the_coordinator_is_refused(
    coord: AuditLog, witness: Witness, how: str
) -> None:
    grow(coord, 3)
    good_body = Checkpoint(COORD, 3, coord.root(3)).body()
    if how == "other-key":
        note = sign_note(good_body, NoteSigner.generate(COORD))
    elif how == "other-origin":
        note = sign_note(Checkpoint("fedmatch/node/IT", 3, coord.root(3)).body(), COORD_SIGNER)
    elif how == "unsigned":
        note = good_body
    else:
        note = b"\xff\xfe"
    with pytest.raises(PermissionDenied, match="checkpoint is not the coordinator's"):
        witness.add_checkpoint(0, [], note)
    assert witness.witnessed_size == 0


@pytest.mark.parametrize(
    "proof",
    [[b"\x00" * 31], [b"\x00" * 33], [b"\x00" * HASH_SIZE] * 65],
    ids=["short-hash", "long-hash", "too-long"],
)
def test_malformed_proof_is_refused(coord: AuditLog, witness: Witness, proof: list[bytes]) -> None:
    witness.add_checkpoint(0, [], grow(coord, 2))
    with pytest.raises(InvalidInput, match="consistency proof is malformed"):
        witness.add_checkpoint(2, proof, grow(coord, 4))


def test_state_persists_across_instances(
    tmp_path: Path, coord: AuditLog, witness: Witness, clock: Clock
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 4))
    late = grow(coord, 7)
    latest = grow(coord, 11)
    witness.add_checkpoint(4, coord.consistency_proof(4, 11), latest)
    witness.add_checkpoint(11, coord.consistency_proof(7, 11), late)

    again = make_witness(tmp_path, clock)
    assert again.witnessed_size == 11
    assert again.root_for(11) == coord.root(11)
    # Only the signed latest checkpoint survives a restart: bare (size, root) pairs on disk
    # could be edited into a history this node never checked.
    assert again.root_for(4) is None and again.root_for(7) is None
    # It goes on from where the other instance stopped, not from scratch.
    note = grow(coord, 13)
    assert again.add_checkpoint(0, [], note) == WitnessAnswer(True, 11, None)
    accepted(again.add_checkpoint(11, coord.consistency_proof(11, 13), note), note, 13)
    assert make_witness(tmp_path, clock).witnessed_size == 13


@pytest.mark.parametrize("how", ["edited-size", "edited-root", "other-key", "other-origin"])
def test_tampered_state_file_is_refused_at_load(
    tmp_path: Path, coord: AuditLog, witness: Witness, clock: Clock, how: str
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 4))
    note = grow(coord, 10)
    witness.add_checkpoint(4, coord.consistency_proof(4, 10), note)
    state_file = tmp_path / "witness" / "state.json"
    state = json.loads(state_file.read_text())
    latest = base64.b64decode(state["latest_note"])
    assert latest == note
    if how == "edited-size":
        tampered = latest.replace(b"\n10\n", b"\n40\n", 1)
    elif how == "edited-root":
        checkpoint_body = Checkpoint(COORD, 10, EMPTY_ROOT).body()
        tampered = checkpoint_body + latest[latest.index(b"\n\n") + 1 :]
    elif how == "other-key":
        tampered = sign_note(Checkpoint(COORD, 40, EMPTY_ROOT).body(), NoteSigner.generate(COORD))
    else:
        tampered = sign_note(Checkpoint("elsewhere", 10, coord.root(10)).body(), COORD_SIGNER)
    assert tampered != latest
    state["latest_note"] = base64.b64encode(tampered).decode()
    state_file.write_text(json.dumps(state))
    with pytest.raises(AuditVerificationError):
        make_witness(tmp_path, clock)


# --- authorization -----------------------------------------------------------------------------


def authorization(log: AuditLog, index: int, size: int) -> Authorization:
    [raw] = log.entries(index, index + 1)
    return Authorization(raw, index, size, tuple(log.inclusion_proof(index, size)))


def test_entry_in_a_witnessed_checkpoint_is_authorized(coord: AuditLog, witness: Witness) -> None:
    witness.add_checkpoint(0, [], grow(coord, 10))
    for index in range(10):
        entry = witness.check(authorization(coord, index, 10))
        assert entry.seq == index
        assert entry.party == COORD
        assert entry.event == event(index)
        entry.verify(COORD_SIGNER.verifier())


def test_entry_in_a_late_witnessed_checkpoint_is_authorized(
    coord: AuditLog, witness: Witness
) -> None:
    witness.add_checkpoint(0, [], grow(coord, 2))
    late = grow(coord, 6)
    latest = grow(coord, 12)
    witness.add_checkpoint(2, coord.consistency_proof(2, 12), latest)
    witness.add_checkpoint(12, coord.consistency_proof(6, 12), late)
    assert witness.check(authorization(coord, 5, 6)).seq == 5
    assert witness.check(authorization(coord, 5, 12)).seq == 5


def test_entry_in_an_unwitnessed_tree_size_is_refused(coord: AuditLog, witness: Witness) -> None:
    witness.add_checkpoint(0, [], grow(coord, 10))
    grow(coord, 12)  # published, never shown to this witness
    with pytest.raises(
        PermissionDenied, match="not on record: no verified coordinator checkpoint of size 12"
    ):
        witness.check(authorization(coord, 11, 12))
    with pytest.raises(PermissionDenied, match="not on record"):
        witness.check(authorization(coord, 3, 12))  # even an old entry, in that tree


def test_wrong_index_is_refused(coord: AuditLog, witness: Witness) -> None:
    witness.add_checkpoint(0, [], grow(coord, 10))
    good = authorization(coord, 3, 10)
    with pytest.raises(PermissionDenied, match="not on record"):
        witness.check(Authorization(good.entry, 4, 10, good.proof))
    with pytest.raises(PermissionDenied, match="not on record"):
        witness.check(Authorization(good.entry, 4, 10, tuple(coord.inclusion_proof(4, 10))))
    with pytest.raises(PermissionDenied, match="not on record"):
        witness.check(Authorization(good.entry, 10, 10, good.proof))


def test_modified_entry_is_refused(coord: AuditLog, witness: Witness) -> None:
    witness.add_checkpoint(0, [], grow(coord, 10))
    good = authorization(coord, 3, 10)
    for position in (0, 20, len(good.entry) // 2, len(good.entry) - 2):
        raw = bytearray(good.entry)
        raw[position] ^= 0x01
        with pytest.raises(PermissionDenied, match="not on record"):
            witness.check(Authorization(bytes(raw), 3, 10, good.proof))
    # Re-signed by another key with the same name: a different leaf, not in the tree.
    entry = witness.check(good)
    forged = encode_entry(NoteSigner.generate(COORD), COORD, 3, entry.unix_ms, entry.event)
    with pytest.raises(PermissionDenied, match="not on record"):
        witness.check(Authorization(forged.raw, 3, 10, good.proof))


def frame(raw: bytes) -> bytes:
    return struct.pack(">II", len(raw), zlib.crc32(raw)) + raw


def test_entry_signed_by_another_key_is_refused_even_inside_the_tree(
    tmp_path: Path, witness: Witness
) -> None:
    # A coordinator log whose first entries were not signed by the coordinator's key, but
    # which the coordinator's checkpoint covers: inclusion holds, the signature does not.
    directory = tmp_path / "odd-coordinator"
    AuditLog(directory, COORD_SIGNER, COORD).close()  # a new log with its empty checkpoint
    impostor = NoteSigner.generate(COORD)
    planted = [
        encode_entry(impostor, COORD, 0, 1, event(0)),
        encode_entry(COORD_SIGNER, "fedmatch/node/IT", 1, 1, event(1)),  # another log's entry
        encode_entry(COORD_SIGNER, COORD, 7, 1, event(2)),  # numbered for another index
    ]
    (directory / LOG_FILE).write_bytes(b"".join(frame(e.raw) for e in planted))
    log = AuditLog(directory, COORD_SIGNER, COORD)
    try:
        note = grow(log, 5)
        witness.add_checkpoint(0, [], note)
        with pytest.raises(PermissionDenied, match="not on record: entry 0 is signed by key"):
            witness.check(authorization(log, 0, 5))
        with pytest.raises(PermissionDenied, match="index or log does not match"):
            witness.check(authorization(log, 1, 5))
        with pytest.raises(PermissionDenied, match="index or log does not match"):
            witness.check(authorization(log, 2, 5))
        assert witness.check(authorization(log, 3, 5)).seq == 3
    finally:
        log.close()


def test_proof_for_another_tree_size_is_refused(coord: AuditLog, witness: Witness) -> None:
    witness.add_checkpoint(0, [], grow(coord, 7))
    note = grow(coord, 10)
    witness.add_checkpoint(7, coord.consistency_proof(7, 10), note)
    [raw] = coord.entries(3, 4)
    for proof_size, claimed in ((7, 10), (10, 7), (8, 10)):
        proof = tuple(coord.inclusion_proof(3, proof_size))
        with pytest.raises(PermissionDenied, match="not on record"):
            witness.check(Authorization(raw, 3, claimed, proof))
    assert witness.check(Authorization(raw, 3, 7, tuple(coord.inclusion_proof(3, 7)))).seq == 3


def test_authorization_shape_is_checked() -> None:
    with pytest.raises(PermissionDenied, match="carries no coordinator log entry"):
        Authorization(b"", 0, 1, ())
    with pytest.raises(InvalidInput, match=f"exceeds {MAX_ENTRY_BYTES} bytes"):
        Authorization(b"x" * (MAX_ENTRY_BYTES + 1), 0, 1, ())
    with pytest.raises(InvalidInput, match="inclusion proof is malformed"):
        Authorization(b"x", 0, 2, (b"\x00" * 31,))
    with pytest.raises(InvalidInput, match="inclusion proof is malformed"):
        Authorization(b"x", 0, 2, (b"\x00" * HASH_SIZE,) * 65)
