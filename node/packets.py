"""A candidate's verification packet, built from the register (fedmatch/protocol/packet.py).

Only what a verifier needs to compare images and to see that a candidate is plausible: the
facial image, sex, age band at capture, capture date and image quality. Never the reference
number, category, event date or place: those are hit details, released after two verdicts.
"""

from __future__ import annotations

from fedmatch.protocol.packet import CandidatePacket, age_band
from node.records import RecordMeta
from node.store import RecordStore

__all__ = ["candidate_packet"]


def candidate_packet(
    store: RecordStore, record_id: int, meta: RecordMeta, member_state: str, handle: bytes
) -> CandidatePacket:
    """The packet of one proven candidate; no image for a record enrolled from a template
    alone (not verifiable by image: the packet and the verifiers' desk say so)."""
    kept = store.face_image(record_id)
    image, quality = kept if kept is not None else (b"", 0.0)
    return CandidatePacket(
        member_state=member_state,
        handle=handle,
        image=image,
        sex=meta.sex,
        age_band=age_band(meta.birth_date, meta.capture_date),
        capture_date=meta.capture_date.isoformat(),
        image_quality=quality,
    )
