"""Data-subject rights at a requesting authority: "which states hold my data?"

A person may ask any member state's authority which states hold their data (DOMAIN.md
section 6; Eurodac recast Art. 43). An answer names a state only after that state's record
was confirmed to be the same person by the same human image comparison as a hit: a model
match alone could be another person, and naming its state would tell the asker about
someone else's record. So the answer takes two steps.

1. :func:`subject_search`: an encrypted search of every other node with the purpose
   ``data_subject_request`` (allowed by node policies for every category, marked records
   included), decrypted locally as any lookup, and, when there are candidates, their
   verification packets (each candidate's facial image, released only for a proven match,
   :mod:`fedmatch.protocol.packet`). What it returns, prints and logs says how many
   candidates await the verifiers, never where; the candidates themselves go to the
   candidates file and packet folder the verifiers work from (``fedmatch rights
   which-states --candidates-out``).
2. The requesting state's verifiers compare the images and sign verdicts (``fedmatch
   verify-hit``, or the desk), two distinct people by default, as for a hit.
3. :func:`subject_answer`: the coordinator checks the verdicts as it checks a resolve's
   (signatures and certificate chains to the federation root, this query, the released
   images; a rejection is final and reported to the owning node) and names the states with
   a candidate confirmed and not rejected. A candidate confirmed without images (a template
   record or a template search) names no state. Hit details are never asked for: the
   coordinator and the nodes refuse them for this purpose.

Every step is logged like any other request (purpose, legal basis, case, unit, operator) at
the coordinator and at each node asked; the coordinator logs the answer with the states it
named and who confirmed them. The requesting state's own register is not searched by the
federation (a state searches its own register nationally).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import InvalidInput
from fedmatch.protocol.verification import (
    DIFFERENT_SEX_CONFIRMATIONS,
    HitKey,
    SignedVerdict,
    needs_two_people,
)
from fedmatch.requester.client import LookupReport, PacketFetch, Requester
from fedmatch.requester.packets import PacketFolder

__all__ = ["StatesAnswer", "SubjectSearch", "subject_answer", "subject_search"]

log = logging.getLogger("fedmatch.requester.rights")


@dataclass(frozen=True)
class SubjectSearch:
    """A data-subject search before its candidates are verified: how many candidates await
    the verifiers, never at which states (it has no field for one)."""

    query_id: str
    # Candidates awaiting verification (model matches: maybe another person).
    candidates: int
    # False when a node did not answer (or its answer was dropped): the search may then
    # miss a state.
    complete: bool
    # The states whose node did not answer: nothing about the person.
    unanswered: tuple[str, ...]
    # The candidates (state and handle) and their packets: for the candidates file and the
    # packet folder the verifiers work from, never for the person's answer.
    report: LookupReport = field(repr=False)
    packets: PacketFetch | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StatesAnswer:
    """The answer a data subject gets: the states whose record was confirmed to be theirs."""

    query_id: str
    # Member states holding a record that verifiers confirmed to be the person, sorted.
    states: tuple[str, ...]
    # True when every node answered and every candidate was confirmed or rejected by
    # people: otherwise the list may miss a state.
    complete: bool
    unanswered: tuple[str, ...]
    # How many candidates were confirmed (their states named), rejected, still pending
    # (too few confirmations, or of another sex than declared with fewer than two), or
    # unverifiable (no images to compare: no state is named on a model match).
    confirmed: int
    rejected: int
    pending: int
    unverifiable: int


def subject_search(
    requester: Requester,
    template: npt.NDArray[np.floating],
    legal_basis: str,
    case_reference: str,
    probe_image: bytes = b"",
    timeout: float = 60.0,
) -> SubjectSearch:
    """Search the other member states for the person of ``template`` and fetch the
    candidates' verification packets. ``probe_image``: the photo the template was made
    from (what the verifiers compare; b"" for a template, which no verifier can compare
    and which therefore names no state)."""
    header = requester.header(Purpose.DATA_SUBJECT_REQUEST, legal_basis, case_reference)
    report = requester.lookup(template, header, timeout=timeout)
    packets = requester.fetch_packets(report, probe_image, timeout) if report.matches else None
    unanswered = tuple(sorted(n.member_state for n in report.nodes if n.outcome != "ok"))
    found = SubjectSearch(
        report.header.query_id, len(report.matches), not unanswered, unanswered, report, packets
    )
    log.info(
        "data-subject search query=%s candidates=%d awaiting verification complete=%s",
        found.query_id,
        found.candidates,
        found.complete,
    )
    return found


def subject_answer(
    requester: Requester,
    header: QueryHeader,
    hits: Sequence[tuple[str, bytes]],
    verdicts: Sequence[SignedVerdict],
    folder: PacketFolder | None = None,
    timeout: float = 30.0,
) -> StatesAnswer:
    """The states of the candidates ``hits`` (of the data-subject search ``header``) that
    the verifiers' ``verdicts`` confirmed, as the coordinator checked them. ``folder``: the
    search's packets on disk; a candidate of another sex than the one declared for the
    person (or with none declared) then needs two confirmations even under a waiver of
    the second person, as a hit does."""
    if header.purpose is not Purpose.DATA_SUBJECT_REQUEST:
        raise InvalidInput("the candidates are not of a data-subject request")
    reply = requester.answer_data_subject(header, hits, verdicts, timeout)
    named: set[str] = set()
    counts = {"verified": 0, "rejected": 0, "pending": 0, "unverifiable": 0}
    for st in reply.statuses:
        status = str(st["status"])
        if status == "verified" and folder is not None and _needs_review(folder, st):
            status = "pending"
        if status == "verified":
            named.add(str(st["member_state"]))
        counts[status if status in counts else "pending"] += 1
    # The coordinator names no state without a verified candidate; this end names none the
    # coordinator did not.
    states = tuple(sorted(named & set(reply.states)))
    settled = counts["verified"] + counts["rejected"] == len(reply.statuses)
    answer = StatesAnswer(
        header.query_id,
        states,
        settled and not reply.unanswered,
        reply.unanswered,
        counts["verified"],
        counts["rejected"],
        counts["pending"],
        counts["unverifiable"],
    )
    # The answer given, on the requester's record (the coordinator logs it as well).
    log.info(
        "data-subject answer query=%s states=%s confirmed=%d rejected=%d pending=%d "
        "unverifiable=%d complete=%s",
        header.query_id,
        ",".join(states) or "-",
        answer.confirmed,
        answer.rejected,
        answer.pending,
        answer.unverifiable,
        answer.complete,
    )
    return answer


def _needs_review(folder: PacketFolder, status: dict[str, object]) -> bool:
    """A confirmed candidate whose packet shows another sex than the one declared for the
    person (or none declared), with fewer than two confirmations."""
    confirmed = status.get("confirmed_by")
    if isinstance(confirmed, list) and len(confirmed) >= DIFFERENT_SEX_CONFIRMATIONS:
        return False
    hit = HitKey(str(status["member_state"]), bytes.fromhex(str(status["handle"])))
    return needs_two_people(folder.candidate(hit).sex, folder.probe_sex())
