"""The requesting state's copy of a lookup's verification packets, on disk for its verifiers.

``fedmatch lookup --candidates-out hits.json`` writes, beside the candidates file, the folder
``hits.json.packets/`` (mode 0700; files 0600): the probe image, each candidate's facial
image and ``manifest.json`` (per candidate: state, handle, the image's file and SHA-256,
sex, age band, capture date, image quality, whether it is verifiable by image). The verifier
desk (:mod:`fedmatch.desk`) and ``fedmatch verify-hit`` read it; a verdict names the SHA-256
of the two images (:class:`fedmatch.protocol.verification.Evidence`). A rejected
candidate's image is deleted from the folder (:meth:`PacketFolder.remove_image`): the
manifest keeps its hash and notes the removal.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmatch.domain import Sex
from fedmatch.errors import InvalidInput, NotFound
from fedmatch.fileio import write_atomically
from fedmatch.protocol.packet import CandidatePacket, image_digest
from fedmatch.protocol.verification import Evidence, HitKey

__all__ = ["Candidate", "PacketFolder", "packets_path"]

_FORMAT = "fedmatch-verification-packets-v1"
_MANIFEST = "manifest.json"


def packets_path(candidates: Path) -> Path:
    """The packet folder that belongs to a candidates file."""
    return candidates.with_name(candidates.name + ".packets")


@dataclass(frozen=True)
class Candidate:
    """One candidate as the manifest lists it (the image itself is a file beside it)."""

    hit: HitKey
    file: str  # "" when the record has no facial image, or the image was removed
    image_sha256: str
    sex: Sex
    age_band: str
    capture_date: str
    image_quality: float
    removed: bool = False  # the image was deleted after a rejection

    @property
    def verifiable(self) -> bool:
        return bool(self.image_sha256)

    def to_json(self) -> dict[str, Any]:
        return {
            "member_state": self.hit.member_state,
            "handle": self.hit.handle.hex(),
            "file": self.file,
            "image_sha256": self.image_sha256,
            "verifiable": self.verifiable,
            "sex": self.sex.value,
            "age_band": self.age_band,
            "capture_date": self.capture_date,
            "image_quality": self.image_quality,
            "removed": self.removed,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Candidate:
        return cls(
            HitKey(str(obj["member_state"]), bytes.fromhex(obj["handle"])),
            str(obj["file"]),
            str(obj["image_sha256"]),
            Sex(obj["sex"]),
            str(obj["age_band"]),
            str(obj["capture_date"]),
            float(obj["image_quality"]),
            bool(obj["removed"]),
        )


def _extension(image: bytes) -> str:
    if image.startswith(b"\xff\xd8"):
        return ".jpg"
    if image.startswith(b"\x89PNG"):
        return ".png"
    return ".img"


class PacketFolder:
    """One lookup's packets: ``path`` is the folder (:func:`packets_path`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(
        self,
        query_id: str,
        probe_image: bytes,
        packets: Sequence[CandidatePacket],
        probe_sex: Sex = Sex.UNSPECIFIED,
    ) -> None:
        """Store the probe image (b"": the lookup was made from a template), the sex the
        authority declares for the person searched, and the packets."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        probe_file = ""
        if probe_image:
            probe_file = "probe" + _extension(probe_image)
            write_atomically(self.path / probe_file, probe_image, mode=0o600)
        listed = []
        for p in packets:
            name = ""
            if p.image:
                name = f"{p.member_state}-{p.handle.hex()}{_extension(p.image)}"
                write_atomically(self.path / name, p.image, mode=0o600)
            hit = HitKey(p.member_state, p.handle)
            listed.append(
                Candidate(
                    hit, name, p.image_sha256, p.sex, p.age_band, p.capture_date, p.image_quality
                )
            )
        probe = {"file": probe_file, "sha256": image_digest(probe_image), "sex": probe_sex.value}
        self._save(query_id, probe, listed)

    def _save(self, query_id: str, probe: dict[str, str], listed: Sequence[Candidate]) -> None:
        body = {
            "format": _FORMAT,
            "query_id": query_id,
            "probe": probe,
            "candidates": [c.to_json() for c in listed],
        }
        data = (json.dumps(body, indent=1) + "\n").encode()
        write_atomically(self.path / _MANIFEST, data, mode=0o600)

    def _load(self) -> dict[str, Any]:
        try:
            obj = json.loads((self.path / _MANIFEST).read_bytes())
        except FileNotFoundError:
            raise NotFound(
                f"no verification packets at {self.path}: the lookup fetched none"
            ) from None
        except (OSError, ValueError):
            raise InvalidInput(f"packet manifest in {self.path} is unreadable") from None
        if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
            raise InvalidInput(f"{self.path} is not a folder of verification packets")
        return obj

    @property
    def query_id(self) -> str:
        return str(self._load()["query_id"])

    def probe_sha256(self) -> str:
        return str(self._load()["probe"]["sha256"])

    def probe_sex(self) -> Sex:
        """The sex declared for the person searched (unspecified when none was)."""
        return Sex(self._load()["probe"]["sex"])

    def probe_path(self) -> Path | None:
        name = str(self._load()["probe"]["file"])
        return self.path / name if name else None

    def candidates(self) -> list[Candidate]:
        try:
            return [Candidate.from_json(c) for c in self._load()["candidates"]]
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"packet manifest in {self.path} is malformed") from None

    def candidate(self, hit: HitKey) -> Candidate:
        for c in self.candidates():
            if c.hit == hit:
                return c
        raise NotFound(f"no verification packet for the hit {hit.label()}")

    def image_path(self, hit: HitKey) -> Path | None:
        c = self.candidate(hit)
        return self.path / c.file if c.file else None

    def evidence(self, hit: HitKey) -> Evidence:
        """What a verdict on ``hit`` binds: the probe's and the candidate's image hashes."""
        return Evidence(self.probe_sha256(), self.candidate(hit).image_sha256)

    def remove_image(self, hit: HitKey) -> None:
        """Delete a rejected candidate's image (the manifest keeps its hash)."""
        obj = self._load()
        listed = self.candidates()
        kept = []
        for c in listed:
            if c.hit == hit and c.file:
                (self.path / c.file).unlink(missing_ok=True)
                c = dataclasses.replace(c, file="", removed=True)
            kept.append(c)
        self._save(str(obj["query_id"]), dict(obj["probe"]), kept)
