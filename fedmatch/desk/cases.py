"""The cases folder: each lookup's candidates file and the files the desk keeps beside it.

For a candidates file ``X.json`` (:mod:`fedmatch.requester.candidates`) the desk reads
``X.json.packets/`` (:class:`fedmatch.requester.packets.PacketFolder`) and writes
``X.json.verdicts/<verifier>.json`` (one verdict file per person,
:mod:`fedmatch.desk.verdicts`), ``X.json.resolve.json`` and ``X.json.decision.json``
(:mod:`fedmatch.desk.officer`). Any other file in the folder is left alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fedmatch.domain import QueryHeader
from fedmatch.errors import FedmatchError, InvalidInput, NotFound
from fedmatch.protocol.verification import HitKey
from fedmatch.requester.candidates import read_candidates
from fedmatch.requester.packets import PacketFolder, packets_path

__all__ = ["Case", "find_case", "hit_label", "load_case", "parse_hit", "scan"]

log = logging.getLogger("fedmatch.desk")

_QUERY_ID = re.compile(r"[0-9a-f]{32}")
_HIT = re.compile(r"(?P<state>[A-Z]{2})-(?P<handle>[0-9a-f]{16})")


@dataclass(frozen=True)
class Case:
    """One lookup awaiting verification: its candidates file, header and hits."""

    path: Path
    header: QueryHeader
    hits: tuple[HitKey, ...]

    @property
    def query_id(self) -> str:
        return self.header.query_id

    @property
    def packets(self) -> PacketFolder:
        return PacketFolder(packets_path(self.path))

    @property
    def has_packets(self) -> bool:
        """Whether this lookup's verification packets are here (a folder of another
        lookup, copied beside this file, does not count)."""
        if not (packets_path(self.path) / "manifest.json").is_file():
            return False
        try:
            return self.packets.query_id == self.query_id
        except FedmatchError as exc:
            log.warning("lookup %s: %s", self.query_id, exc)
            return False

    @property
    def verdicts_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".verdicts")

    @property
    def resolve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".resolve.json")

    @property
    def decision_path(self) -> Path:
        return self.path.with_name(self.path.name + ".decision.json")

    def hit(self, label: str) -> HitKey:
        """The hit a URL names (``IT-0000000100000002``); NotFound if not in this case."""
        hit = parse_hit(label)
        if hit not in self.hits:
            raise NotFound("no such candidate in this lookup")
        return hit


def hit_label(hit: HitKey) -> str:
    """How a URL names a hit: its state and handle (no personal data)."""
    return f"{hit.member_state}-{hit.handle.hex()}"


def parse_hit(label: str) -> HitKey:
    match = _HIT.fullmatch(label)
    if match is None:
        raise NotFound("no such candidate")
    return HitKey(match["state"], bytes.fromhex(match["handle"]))


def load_case(path: Path) -> Case:
    """The case of one candidates file (InvalidInput when it is not one)."""
    header, hits = read_candidates(path)
    return Case(path, header, tuple(dict.fromkeys(HitKey(s, h) for s, h in hits)))


def scan(folder: Path, state: str | None = None) -> list[Case]:
    """The cases in ``folder`` (of the requesting ``state`` only, when given), by file name.
    Files that are not candidates files are skipped; a packet folder or verdict file never
    looks like one."""
    found = []
    for path in sorted(folder.glob("*.json")):
        if not path.is_file() or path.name.endswith((".resolve.json", ".decision.json")):
            continue
        try:
            case = load_case(path)
        except InvalidInput:
            continue
        if state is None or case.header.requesting_state == state:
            found.append(case)
    return found


def find_case(folder: Path, query_id: str, state: str | None = None) -> Case:
    if not _QUERY_ID.fullmatch(query_id):
        raise NotFound("no such lookup")
    for case in scan(folder, state):
        if case.query_id == query_id:
            return case
    raise NotFound("no such lookup")
