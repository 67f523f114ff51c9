"""Client side of enrolment: a state's own officer sending records to its own node."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np
import numpy.typing as npt

from fedmatch.domain import Category, QueryHeader, Sex
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.wire import category_to_pb, header_to_pb, sex_to_pb
from fedmatch.requester.officer_channel import officer_channel
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc

__all__ = ["EnrolmentRecord", "NodeEnroller"]

# How the wire names "refuse several faces" and "the largest" (node.proto, Photo.pick).
_PICK: dict[object, int] = {None: -1, "largest": -2}


@dataclass(frozen=True)
class EnrolmentRecord:
    """What an authority enters for a record besides the template (validated by the node)."""

    reference: str
    category: Category
    event_date: dt.date
    event_place: str
    capture_date: dt.date
    sex: Sex = Sex.UNSPECIFIED
    operator_id: str = ""
    # Required by the node (minimum age 6 at capture); an estimate says so.
    birth_date: dt.date | None = None
    birth_date_estimated: bool = False
    # Resettlement records only, required for them: the Eurodac recast article the data
    # were taken under ("18(2)(a)", "18(2)(b)", "18(2)(c)", "20"), which decides their
    # retention (Art. 29(3)-(5)); the node refuses "18(1)" (not recorded, Art. 29(2)).
    resettlement_basis: str = ""

    def to_pb(self) -> node_pb2.RecordMetadata:
        return node_pb2.RecordMetadata(
            reference=self.reference,
            category=category_to_pb(self.category),
            event_date=self.event_date.isoformat(),
            event_place=self.event_place,
            capture_date=self.capture_date.isoformat(),
            sex=sex_to_pb(self.sex),
            operator_id=self.operator_id,
            birth_date=self.birth_date.isoformat() if self.birth_date else "",
            birth_date_estimated=self.birth_date_estimated,
            resettlement_basis=self.resettlement_basis,
        )


class NodeEnroller:
    """A channel to one node for enrolment; use as a context manager.

    ``credentials`` are the operator workstation's mTLS credentials (an operator certificate
    of the node's own state: the node refuses any other); the node's certificate must name
    ``node.<state>.fedmatch.eu``. None means plaintext (``--dev-insecure``). ``signer`` is
    the enrolling officer's: their key signs each enrolment, and every header must name
    them as its operator (:mod:`fedmatch.requester.officer_channel`)."""

    def __init__(
        self,
        address: str,
        model_id: str,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        member_state: str = "",
        *,
        signer: RequestSigner,
    ) -> None:
        if credentials is not None and not member_state:
            raise ValueError("an mTLS enrolment channel needs the node's member state")
        self._channel = make_channel(
            address,
            MAX_RECEIVE_BYTES,
            MAX_RECEIVE_BYTES,
            credentials,
            dns_name("node", member_state) if credentials is not None else None,
        )
        self._stub = node_pb2_grpc.NodeServiceStub(officer_channel(self._channel, signer))
        self.model_id = model_id
        self.timeout = timeout

    def __enter__(self) -> NodeEnroller:
        return self

    def __exit__(self, *_: object) -> None:
        self._channel.close()

    def enroll(
        self, header: QueryHeader, record: EnrolmentRecord, template: npt.NDArray[np.floating]
    ) -> int:
        """Enrol one record; returns the register size. gRPC errors propagate as RpcError."""
        request = node_pb2.EnrollRequest(
            header=header_to_pb(header),
            record=record.to_pb(),
            template=node_pb2.Template(
                model_id=self.model_id, values=np.asarray(template, dtype=np.float32).tolist()
            ),
        )
        response: node_pb2.EnrollResponse = self._stub.Enroll(request, timeout=self.timeout)
        return response.register_size

    def enroll_photo(
        self,
        header: QueryHeader,
        record: EnrolmentRecord,
        photo: bytes,
        name: str,
        pick: int | Literal["largest"] | None = None,
    ) -> int:
        """Enrol one record from a photograph: the node makes the template with its own
        face model and keeps the facial image its experts' peers will compare a hit with
        (a record enrolled from a template alone is not verifiable by image). A photo a
        quality gate refuses comes back as INVALID_ARGUMENT, details "<code>: <why>"."""
        request = node_pb2.EnrollRequest(
            header=header_to_pb(header),
            record=record.to_pb(),
            photo=node_pb2.Photo(
                data=photo,
                name=name,
                pick=-1 if pick is None else -2 if pick == "largest" else pick,
            ),
        )
        response: node_pb2.EnrollResponse = self._stub.Enroll(request, timeout=self.timeout)
        return response.register_size
