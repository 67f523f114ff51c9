"""What a verifier sees and does: the candidates awaiting their verdict, one candidate's
comparison, and signing a verdict with their own key.

Blind review: nothing here tells a verifier what another verifier decided on a hit before
they gave their own verdict (:func:`view` returns the tally only afterwards). A rejected
candidate leaves every worklist, and its image is deleted at the desk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedmatch.desk.cases import Case, scan
from fedmatch.desk.verdicts import Tally, given_by, record, tallies
from fedmatch.domain import Sex
from fedmatch.errors import InvalidInput, NotFound, PreconditionFailed
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.verification import (
    REJECT_REASONS,
    HitKey,
    VerdictSigner,
    VerdictStatement,
    different_sex,
)
from fedmatch.requester.packets import Candidate, PacketFolder

__all__ = ["Item", "View", "candidate_image", "pending", "probe_image", "sign", "view", "worklist"]


@dataclass(frozen=True)
class Item:
    """One candidate as a verifier sees it: non-identifying metadata and the flags."""

    case: Case
    candidate: Candidate
    probe_sex: Sex

    @property
    def hit(self) -> HitKey:
        return self.candidate.hit

    @property
    def different_sex(self) -> bool:
        return different_sex(self.candidate.sex, self.probe_sex)

    @property
    def verifiable(self) -> bool:
        return self.candidate.verifiable

    @property
    def number(self) -> int:
        """The candidate's position in the lookup (1-based), how the pages name it."""
        return self.case.hits.index(self.hit) + 1


@dataclass(frozen=True)
class View:
    item: Item
    mine: VerdictStatement | None
    # The verdicts of everyone: None until this verifier gave their own (blind review).
    tally: Tally | None

    @property
    def rejected(self) -> bool:
        return self.item.candidate.removed or (
            self.tally is not None and bool(self.tally.rejected_by)
        )


def _check_state(case: Case, signer_state: str) -> None:
    if case.header.requesting_state != signer_state:
        raise NotFound("no such lookup")


def _items(case: Case) -> list[Item]:
    if not case.has_packets:
        return []
    folder = case.packets
    sex = folder.probe_sex()
    return [Item(case, c, sex) for c in folder.candidates() if c.hit in case.hits]


def pending(case: Case, verifier: str) -> list[Item]:
    """The candidates of ``case`` awaiting ``verifier``: a packet is here, they gave no
    verdict on it yet and nobody rejected it."""
    mine = given_by(case, verifier)
    rejected = {hit for hit, t in tallies(case).items() if t.rejected_by}
    return [
        item
        for item in _items(case)
        if item.hit not in mine and item.hit not in rejected and not item.candidate.removed
    ]


def worklist(folder: Path, verifier: str, state: str) -> list[tuple[Case, list[Item]]]:
    """Each lookup of ``state`` in the cases folder with the candidates awaiting ``verifier``
    (lookups with none are listed too, with an empty list)."""
    return [(case, pending(case, verifier)) for case in scan(folder, state)]


def _item(case: Case, hit: HitKey) -> Item:
    for item in _items(case):
        if item.hit == hit:
            return item
    raise NotFound("no verification packet for this candidate")


def view(case: Case, hit: HitKey, verifier: str, state: str) -> View:
    _check_state(case, state)
    item = _item(case, hit)
    mine = given_by(case, verifier).get(hit)
    return View(item, mine, tallies(case)[hit] if mine is not None else None)


def _checked(folder: PacketFolder, path: Path | None, digest: str) -> bytes:
    if path is None or not digest:
        raise NotFound("no image")
    # Only a file of the packet folder itself, whatever the manifest says.
    if path.resolve().parent != folder.path.resolve():
        raise NotFound("no image")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound("the image is no longer at the desk") from None
    if image_digest(data) != digest:
        # Never shown: a verdict would name an image other than the one on screen.
        raise PreconditionFailed("the image at the desk is not the one its packet names")
    return data


def probe_image(case: Case, state: str) -> tuple[bytes, str]:
    """The probe image and its file name, checked against the hash the verdicts bind."""
    _check_state(case, state)
    folder = case.packets
    path = folder.probe_path()
    return _checked(folder, path, folder.probe_sha256()), path.name if path else ""


def candidate_image(case: Case, hit: HitKey, state: str) -> tuple[bytes, str]:
    _check_state(case, state)
    folder = case.packets
    path = folder.image_path(hit)
    return _checked(folder, path, folder.candidate(hit).image_sha256), path.name if path else ""


def sign(
    case: Case, hit: HitKey, signer: VerdictSigner, state: str, reject: str | None = None
) -> VerdictStatement:
    """``signer`` confirms (``reject`` None) or rejects, with a reason code, the candidate
    ``hit``, on the two images its packet names; a reject deletes the candidate's image."""
    _check_state(case, state)
    if reject is not None and reject not in REJECT_REASONS:
        raise InvalidInput(f"a reject needs a reason: one of {', '.join(REJECT_REASONS)}")
    item = _item(case, hit)
    if item.candidate.removed or tallies(case)[hit].rejected_by:
        raise PreconditionFailed("this candidate was rejected: it needs no further verdict")
    folder = case.packets
    # The images on disk must still be the ones the verdict names (and the page showed).
    if folder.probe_sha256():
        _checked(folder, folder.probe_path(), folder.probe_sha256())
    if item.verifiable:
        _checked(folder, folder.image_path(hit), item.candidate.image_sha256)
    evidence = folder.evidence(hit)
    h = case.header
    signed = (
        signer.confirm(h.query_id, h.requesting_state, hit, evidence, item.probe_sex)
        if reject is None
        else signer.reject(h.query_id, h.requesting_state, hit, evidence, reject, item.probe_sex)
    )
    statement = record(case, signed)
    if reject is not None:
        folder.remove_image(hit)
    return statement
