"""Data-subject rights at a requesting authority: "which states hold my data?"

A person may ask any member state's authority which states hold their data (DOMAIN.md
section 6; Eurodac recast Art. 43). The authority runs an encrypted search of every other
node with the purpose ``data_subject_request`` (allowed by node policies for every category,
marked records included) and decrypts the match bits locally, as for any lookup. The answer
is only the list of states with a match: the handles are dropped here and never resolved,
and the coordinator and the nodes refuse hit details for that purpose. The search is logged
like any other (purpose, legal basis, case, unit, operator) at the coordinator and at every
node.

The requesting state's own register is not searched by the federation (a state searches
its own register nationally).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmatch.domain import Purpose
from fedmatch.requester.client import Requester

__all__ = ["StatesAnswer", "which_states"]


@dataclass(frozen=True)
class StatesAnswer:
    query_id: str
    # Member states whose register holds a record matching the person, sorted.
    states: tuple[str, ...]
    # False when a node did not answer: the list may then miss a state.
    complete: bool
    unanswered: tuple[str, ...]


def which_states(
    requester: Requester,
    template: npt.NDArray[np.floating],
    legal_basis: str,
    case_reference: str,
    timeout: float = 60.0,
) -> StatesAnswer:
    """Which other member states hold a record of the person of ``template``."""
    header = requester.header(Purpose.DATA_SUBJECT_REQUEST, legal_basis, case_reference)
    report = requester.lookup(template, header, timeout=timeout)
    # Per node, only whether it matched: the handles go no further than this line.
    states = sorted({n.member_state for n in report.nodes if n.matches > 0})
    unanswered = sorted(n.member_state for n in report.nodes if n.outcome != "ok")
    return StatesAnswer(report.header.query_id, tuple(states), not unanswered, tuple(unanswered))
