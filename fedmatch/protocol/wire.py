"""Conversion between protobuf messages and domain objects, for every party.

Protobuf stays at the edge: servicers call these functions first thing and hand frozen
dataclasses to services. Every conversion from the wire validates and raises InvalidInput
with the field's name; none echoes a value it refuses.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence

from fedmatch.audit.witness import Authorization, WitnessAnswer
from fedmatch.domain import (
    Category,
    EncryptedProbe,
    HitDetail,
    MarkKind,
    Purpose,
    QueryHeader,
    Sex,
    parse_date,
)
from fedmatch.errors import InvalidInput
from fedmatch.he.keys import KeyBundle
from fedmatch.protocol.limits import HANDLE_BYTES, MAX_HANDLES_PER_REQUEST
from fedmatch.protocol.packet import MAX_SEALED_PACKET_BYTES, SealedPacket, check_image_digest
from fedmatch.protocol.statement import SignedRequest
from fedmatch.protocol.verification import MAX_VERDICTS, SignedVerdict
from fedmatch.rpc.v1 import audit_pb2
from fedmatch.rpc.v1 import common_pb2 as pb

__all__ = [
    "authorization_from_pb",
    "authorization_to_pb",
    "category_from_pb",
    "category_to_pb",
    "decode_handle",
    "encode_handle",
    "header_from_pb",
    "header_to_pb",
    "hit_from_pb",
    "hit_to_pb",
    "key_bundle_from_pb",
    "key_bundle_to_pb",
    "mark_from_wire",
    "sex_from_pb",
    "sex_to_pb",
    "signed_from_pb",
    "verdict_to_pb",
    "verdicts_from_pb",
    "witness_answer_to_pb",
]

_PURPOSES: dict[int, Purpose] = {
    pb.PURPOSE_ASYLUM_DUBLIN: Purpose.ASYLUM_DUBLIN,
    pb.PURPOSE_BORDER_CONTROL: Purpose.BORDER_CONTROL,
    pb.PURPOSE_ILLEGAL_STAY_CHECK: Purpose.ILLEGAL_STAY_CHECK,
    pb.PURPOSE_RESETTLEMENT: Purpose.RESETTLEMENT,
    pb.PURPOSE_LAW_ENFORCEMENT: Purpose.LAW_ENFORCEMENT,
    pb.PURPOSE_DATA_SUBJECT_REQUEST: Purpose.DATA_SUBJECT_REQUEST,
}
_PURPOSES_PB = {v: k for k, v in _PURPOSES.items()}

_CATEGORIES: dict[int, Category] = {
    pb.CATEGORY_APPLICANT: Category.APPLICANT,
    pb.CATEGORY_IRREGULAR_CROSSING: Category.IRREGULAR_CROSSING,
    pb.CATEGORY_ILLEGAL_STAY: Category.ILLEGAL_STAY,
    pb.CATEGORY_SAR_DISEMBARKED: Category.SAR_DISEMBARKED,
    pb.CATEGORY_RESETTLEMENT: Category.RESETTLEMENT,
    pb.CATEGORY_TEMPORARY_PROTECTION: Category.TEMPORARY_PROTECTION,
}
_CATEGORIES_PB = {v: k for k, v in _CATEGORIES.items()}

_SEXES: dict[int, Sex] = {
    pb.SEX_UNSPECIFIED: Sex.UNSPECIFIED,
    pb.SEX_FEMALE: Sex.FEMALE,
    pb.SEX_MALE: Sex.MALE,
    pb.SEX_OTHER: Sex.OTHER,
}
_SEXES_PB = {v: k for k, v in _SEXES.items()}


def header_from_pb(msg: pb.RequestHeader, has_header: bool = True) -> QueryHeader:
    if not has_header:
        raise InvalidInput("header is required")
    purpose = _PURPOSES.get(msg.purpose)
    if purpose is None:
        raise InvalidInput("header.purpose is missing or unknown")
    return QueryHeader(
        query_id=msg.query_id,
        requesting_state=msg.requesting_state,
        purpose=purpose,
        legal_basis=msg.legal_basis,
        case_reference=msg.case_reference,
        unit=msg.requesting_unit,
        operator=msg.operator_id,
    )


def signed_from_pb(msg: pb.RequestHeader) -> SignedRequest | None:
    """The requester's signed statement carried in a header, if any."""
    if not msg.HasField("signed"):
        return None
    s = msg.signed
    return SignedRequest(s.statement, s.signature, s.signer_chain, s.approval, s.approver_chain)


def header_to_pb(header: QueryHeader, signed: SignedRequest | None = None) -> pb.RequestHeader:
    out = _header_pb(header)
    if signed is not None:
        out.signed.CopyFrom(
            pb.RequestSignature(
                statement=signed.statement,
                signature=signed.signature,
                signer_chain=signed.signer_chain,
                approval=signed.approval,
                approver_chain=signed.approver_chain,
            )
        )
    return out


def _header_pb(header: QueryHeader) -> pb.RequestHeader:
    return pb.RequestHeader(
        query_id=header.query_id,
        requesting_state=header.requesting_state,
        purpose=_PURPOSES_PB[header.purpose],  # type: ignore[arg-type]
        legal_basis=header.legal_basis,
        case_reference=header.case_reference,
        requesting_unit=header.unit,
        operator_id=header.operator,
    )


def category_from_pb(value: int) -> Category:
    category = _CATEGORIES.get(value)
    if category is None:
        names = ", ".join(c.value for c in Category)
        raise InvalidInput(f"unknown category; expected one of: {names}")
    return category


def category_to_pb(category: Category) -> pb.Category.ValueType:
    return _CATEGORIES_PB[category]  # type: ignore[return-value]


def sex_from_pb(value: int) -> Sex:
    sex = _SEXES.get(value)
    if sex is None:
        raise InvalidInput("unknown sex value")
    return sex


def sex_to_pb(sex: Sex) -> pb.Sex.ValueType:
    return _SEXES_PB[sex]  # type: ignore[return-value]


def key_bundle_from_pb(msg: pb.HEKeyBundle) -> KeyBundle:
    return KeyBundle(
        param_set=msg.he_param_set,
        parms=msg.parms,
        public_key=msg.public_key,
        galois_keys=msg.galois_keys,
        secret_key=msg.secret_key,
        relin_keys=msg.relin_keys,
    )


def key_bundle_to_pb(bundle: KeyBundle) -> pb.HEKeyBundle:
    if bundle.secret_key:
        # The wire never carries a secret key from our side; a private bundle is for disk.
        raise InvalidInput("refusing to put a secret key on the wire")
    return pb.HEKeyBundle(
        he_param_set=bundle.param_set,
        parms=bundle.parms,
        public_key=bundle.public_key,
        galois_keys=bundle.galois_keys,
        relin_keys=bundle.relin_keys,
    )


def hit_from_pb(msg: pb.HitDetail) -> HitDetail:
    return HitDetail(
        member_state=msg.member_state,
        handle=msg.handle,
        category=category_from_pb(msg.category),
        reference=msg.reference,
        event_date=parse_date(msg.event_date, "event_date"),
        event_place=msg.event_place,
        capture_date=parse_date(msg.capture_date, "capture_date"),
        sex=sex_from_pb(msg.sex),
        mark=mark_from_wire(msg.mark),
        marked_on=_optional_date(msg.marked_on, "marked_on"),
        responsible_state=msg.responsible_state,
        responsible_basis=msg.responsible_basis,
        transmitted_on=_optional_date(msg.transmitted_on, "transmitted_on"),
        transferred_on=_optional_date(msg.transferred_on, "transferred_on"),
        removed_on=_optional_date(msg.removed_on, "removed_on"),
        left_territory_on=_optional_date(msg.left_territory_on, "left_territory_on"),
        relocated_to=msg.relocated_to,
        relocated_on=_optional_date(msg.relocated_on, "relocated_on"),
    )


def mark_from_wire(value: str) -> MarkKind:
    """A mark kind from its wire name ("" for none); InvalidInput for any other name."""
    try:
        return MarkKind(value)
    except ValueError:
        names = "'', 'protection_granted' or 'residence_document'"
        raise InvalidInput(f"mark must be {names}") from None


def _optional_date(value: str, field: str) -> dt.date | None:
    return parse_date(value, field) if value else None


def hit_to_pb(hit: HitDetail) -> pb.HitDetail:
    # The record's text fields are the wire's, one for one; the enums and the handle are not.
    text = {k: v for k, v in hit.record_json().items() if k not in ("category", "sex")}
    return pb.HitDetail(
        handle=hit.handle,
        category=category_to_pb(hit.category),
        sex=sex_to_pb(hit.sex),
        **text,
    )


def probe_from_pb(msg: pb.EncryptedProbe) -> EncryptedProbe:
    return EncryptedProbe(
        param_set=msg.he_param_set,
        ciphertext=msg.ciphertext,
        model_id=msg.model_id,
        dimension=msg.dimension,
        key_id=msg.key_id,
    )


def probe_to_pb(probe: EncryptedProbe) -> pb.EncryptedProbe:
    return pb.EncryptedProbe(
        he_param_set=probe.param_set,
        ciphertext=probe.ciphertext,
        model_id=probe.model_id,
        dimension=probe.dimension,
        key_id=probe.key_id,
    )


# A position handle: the index of a result block in a node's response and a position in
# it (real parts first, then imaginary parts), big-endian uint32 each.
_HANDLE = struct.Struct(">II")
assert _HANDLE.size == HANDLE_BYTES


def encode_handle(block: int, position: int) -> bytes:
    return _HANDLE.pack(block, position)


def decode_handle(handle: bytes) -> tuple[int, int]:
    if len(handle) != HANDLE_BYTES:
        raise InvalidInput(f"a handle is {HANDLE_BYTES} bytes")
    block, position = _HANDLE.unpack(handle)
    return int(block), int(position)


def authorization_from_pb(msg: pb.LogAuthorization) -> Authorization:
    """A coordinator log authorization; an absent one fails as 'not on record'."""
    return Authorization(
        entry=msg.entry, index=msg.index, tree_size=msg.tree_size, proof=tuple(msg.inclusion_proof)
    )


def authorization_to_pb(auth: Authorization) -> pb.LogAuthorization:
    return pb.LogAuthorization(
        entry=auth.entry,
        index=auth.index,
        tree_size=auth.tree_size,
        inclusion_proof=list(auth.proof),
    )


def witness_answer_to_pb(answer: WitnessAnswer) -> audit_pb2.AddCheckpointResponse:
    """A witness's answer to AddCheckpoint: a conflict, or its cosignature line value."""
    cosig = answer.cosignature
    return audit_pb2.AddCheckpointResponse(
        conflict=answer.conflict,
        witnessed_size=answer.witnessed_size,
        witness_name=cosig.name if cosig else "",
        cosignature=(cosig.key_id + cosig.value) if cosig else b"",
    )


def verdict_to_pb(verdict: SignedVerdict) -> pb.HitVerdict:
    return pb.HitVerdict(
        statement=verdict.statement,
        signature=verdict.signature,
        signer_chain=verdict.signer_chain,
    )


def verdicts_from_pb(msgs: Sequence[pb.HitVerdict]) -> list[SignedVerdict]:
    """Signed hit verdicts as received (their signatures are checked by the service)."""
    if len(msgs) > MAX_VERDICTS:
        raise InvalidInput(f"at most {MAX_VERDICTS} verdicts per request")
    return [SignedVerdict(m.statement, m.signature, m.signer_chain) for m in msgs]


def packet_to_pb(packet: SealedPacket) -> pb.SealedPacket:
    return pb.SealedPacket(
        handle=packet.handle, image_sha256=packet.image_sha256, ciphertext=packet.ciphertext
    )


def packets_from_pb(msgs: Sequence[pb.SealedPacket]) -> list[SealedPacket]:
    """Sealed packets as received (the coordinator relays them; the requester opens them):
    at most one per handle of a request, each of a plausible size and digest."""
    if len(msgs) > MAX_HANDLES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_HANDLES_PER_REQUEST} packets per answer")
    out = []
    for m in msgs:
        if len(m.handle) != HANDLE_BYTES:
            raise InvalidInput(f"a packet's handle is {HANDLE_BYTES} bytes")
        check_image_digest(m.image_sha256, "packet image_sha256")
        if len(m.ciphertext) > MAX_SEALED_PACKET_BYTES:
            raise InvalidInput(f"a sealed packet is at most {MAX_SEALED_PACKET_BYTES} bytes")
        out.append(SealedPacket(m.handle, m.image_sha256, m.ciphertext))
    if len({p.handle for p in out}) != len(out):
        raise InvalidInput("two packets for one handle")
    return out
