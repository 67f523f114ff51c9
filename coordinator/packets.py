"""The coordinator's part in verification packets: relay them unread, remember what was
released, and hold every verdict to it.

A packet (fedmatch/protocol/packet.py) is encrypted end to end from the owning node to the
requester; the coordinator sees only its handle and the SHA-256 of its image. Per pending
lookup it keeps the probe image's SHA-256 the requester declared (in the signed request)
and the image SHA-256 of every packet a node released: a resolve's verdicts must name
exactly those (:func:`fedmatch.protocol.verification.check_evidence`), so a verdict on images
other than the ones released, or on a hit whose packet never was, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.fanout import NodeCall, NodeOutcome
from fedmatch.errors import FedmatchError
from fedmatch.protocol.packet import SealedPacket, admit_packet_request
from fedmatch.protocol.verification import (
    HitKey,
    SignedVerdict,
    Verdict,
    VerdictStatement,
    check_evidence,
)
from fedmatch.protocol.wire import packets_from_pb

__all__ = ["PacketLedger", "StatePackets", "received_packets", "rejections_by_state"]


@dataclass(frozen=True)
class StatePackets:
    """One node's answer to a packet request, as relayed to the requester."""

    member_state: str
    packets: tuple[SealedPacket, ...]
    outcome: str  # "ok", a NodeOutcome, or "invalid" (an answer for handles not asked)
    detail: str = ""


@dataclass
class PacketLedger:
    """What was released for one lookup (kept with it, under the coordinator's lock)."""

    probe_image: str | None = None
    released: dict[HitKey, str] = field(default_factory=dict)
    requests: int = 0

    def begin(self, probe_image: str) -> None:
        admit_packet_request(self.requests, self.probe_image, probe_image)
        self.requests += 1
        # Fixed here, under the caller's lock: a concurrent request naming another probe
        # image is refused, whatever the nodes answer.
        self.probe_image = probe_image

    def record(self, answers: Sequence[StatePackets]) -> None:
        for answer in answers:
            for p in answer.packets:
                self.released[HitKey(answer.member_state, p.handle)] = p.image_sha256

    def check(self, verdicts: Sequence[SignedVerdict]) -> None:
        """Every verdict names the released images of its hit (PermissionDenied)."""
        check_evidence(
            (VerdictStatement.decode(v.statement) for v in verdicts),
            self.released,
            self.probe_image,
        )

    def not_verifiable(self, hit: HitKey) -> bool:
        """No image comparison was possible: no facial image, or no probe image."""
        return self.released.get(hit) == "" or self.probe_image == ""


def received_packets(
    calls: Mapping[str, NodeCall], asked: Mapping[str, Sequence[bytes]]
) -> list[StatePackets]:
    """Each node's packets, checked for shape: a node answering for a handle it was not
    asked about is reported as ``invalid`` and relayed nothing."""
    out = []
    for state, call in sorted(calls.items()):
        if call.outcome is not NodeOutcome.OK:
            out.append(StatePackets(state, (), call.outcome.value, call.detail))
            continue
        try:
            packets = packets_from_pb(call.response.packets)
        except FedmatchError as exc:
            out.append(StatePackets(state, (), "invalid", str(exc)[:300]))
            continue
        if not {p.handle for p in packets} <= set(asked[state]):
            out.append(StatePackets(state, (), "invalid", "packets for handles not asked"))
            continue
        out.append(StatePackets(state, tuple(packets), "ok"))
    return out


def rejections_by_state(
    verdicts: Mapping[HitKey, Sequence[SignedVerdict]], rejected: Sequence[HitKey]
) -> dict[str, list[SignedVerdict]]:
    """The rejecting verdicts of ``rejected`` hits, per owning state (to report to it)."""
    out: dict[str, list[SignedVerdict]] = {}
    for hit in rejected:
        for v in verdicts.get(hit, ()):
            if VerdictStatement.decode(v.statement).verdict is Verdict.REJECT:
                out.setdefault(hit.member_state, []).append(v)
    return out
