"""Fuzzing every RPC of a live federation over mTLS (issue 6): at least 10,000 generated
inputs per RPC, zero crashes, zero hangs, only expected status codes.

Every RPC is called as a caller its authorization rules admit (an operator at the
coordinator, the coordinator at a node, the node's own operator for enrolment, the auditor
for the audit service): any other caller is refused by the interceptor before the handler
runs, which would fuzz nothing. Inputs of four kinds, all sent as raw bytes so that
malformed protobuf reaches the server:

* ``raw``: hypothesis ``st.binary`` bodies;
* ``mutant``: byte-level mutations (flips, truncations, insertions, deletions, repeats) of a
  plausible serialized request of the RPC;
* ``struct``: messages built from the real protobuf classes with hostile field values (odd,
  oversized and non-printable strings and unicode, unknown enum values, repeated fields in
  the thousands, random bytes for ciphertexts, keys, entries, notes and proofs, real headers
  with a corrupted signed statement, real HE objects that are wrong: truncated, lower-level,
  three-part, other-scale and other-parameter-set ciphertexts, key bundles with a secret
  key, from another parameter set or lacking rotation keys; forged and foreign checkpoints;
  real verdicts made wrong in one way), valid enrolments with one thing wrong, and a few
  explicit inputs: at the size limits (a whole real key bundle with its secret key, a probe
  or a photo one byte over its bound), valid enrolments but for a non-printable character
  in the header's legal basis or case reference, enrolments and lookups with a
  20,000-character model id;
* ``deep``: for the RPCs behind a signature, requests that are correctly signed (and, at a
  node, on the coordinator's record) but whose payload is hostile, so that the checks after
  the signature are reached too; for the rejections relayed to a node, verdicts correctly
  signed by real verifiers that state hostile things. Searches are signed by FR's operator
  (FR's search rate is charged), so that the honest lookup of DE at the end is not rate
  limited. Packet requests may name FR lookups both nodes answered (the fixture's only
  searches), so that they reach the nodes too.

Each input is a real RPC, sent in concurrent batches on long-lived channels, each with a
60 s deadline. The verdict of each call (:func:`_verdict`): a body that does not parse as
the request message must come back INTERNAL (grpcio's own answer); one that parses must end
with a code of the RPC's expected set (``RPCS``, with the reason of every code), and never
INTERNAL (an unexpected exception in our code), UNKNOWN (an uncaught one) or
DEADLINE_EXCEEDED (a hang); OK only for the kinds of input that can legitimately succeed,
and then with a response that parses. No input may make a node do homomorphic work, and a
refused enrolment must enrol nothing. The last test checks that every server still serves
honest requests (verification packets and rejections included).

``pytest -s tests/integration/test_fuzz_rpcs.py`` prints each RPC's input counts and status
histograms.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import tenseal.sealapi as seal
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2 as hpb
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from coordinator.servicer import COORDINATOR_RULES
from fedmatch.audit.access import REQUEST_DOMAIN
from fedmatch.audit.entry import MAX_ENTRY_BYTES, EventKind, digest_hex
from fedmatch.audit.events import handles_digest, header_event
from fedmatch.audit.merkle import EMPTY_ROOT
from fedmatch.audit.note import Checkpoint, NoteSigner, sign_note
from fedmatch.audit.party import COORDINATOR_ORIGIN
from fedmatch.domain import MAX_PROBE_BYTES, EncryptedProbe, Purpose, QueryHeader
from fedmatch.errors import FedmatchError, NotFound
from fedmatch.grpcutil.server import make_channel
from fedmatch.he import sealio, uniform
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, ParamSet
from fedmatch.pki.names import dns_name
from fedmatch.protocol.canonical import canonical_json
from fedmatch.protocol.casefile import confirmation_digest
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.node_action import NODE_ACTIONS, action_digest
from fedmatch.protocol.opening import MAX_OPENINGS, MAX_SEALED_BYTES
from fedmatch.protocol.packet import image_digest
from fedmatch.protocol.statement import (
    MAX_CHAIN_BYTES,
    MAX_STATEMENT_BYTES,
    STATEMENT_DOMAIN,
    RequestSigner,
    SignedRequest,
    key_id,
    sign_request,
)
from fedmatch.protocol.verification import (
    MAX_VERDICT_BYTES,
    MAX_VERDICTS,
    REJECT_REASONS,
    VERDICT_DOMAIN,
    HitKey,
    VerdictSigner,
)
from fedmatch.protocol.wire import (
    authorization_to_pb,
    encode_handle,
    header_from_pb,
    header_to_pb,
    probe_to_pb,
)
from fedmatch.rpc.v1 import audit_pb2 as apb
from fedmatch.rpc.v1 import common_pb2 as pb
from fedmatch.rpc.v1 import coordinator_pb2 as cpb
from fedmatch.rpc.v1 import node_pb2 as npb
from node.service import MAX_PHOTO_BYTES
from node.servicer import NODE_RULES
from tests.federation import (
    VERIFIERS,
    Federation,
    as_sent,
    confirmations,
    expert,
    federation,
    header,
    pki,
    request_signer,
    security,
    shared_keys,
)

pytestmark = pytest.mark.slow

# FEDMATCH_FUZZ_INPUTS: fewer inputs for a quick run by hand (CI runs the 10,000).
MIN_INPUTS = int(os.environ.get("FEDMATCH_FUZZ_INPUTS", "10000"))
RAW = MIN_INPUTS // 2  # raw and mutant bodies per RPC; structured (and deep) ones make up the rest
BATCH = 25  # calls in flight at once (a server sheds load beyond 64)
DEEP_BATCH = {"Lookup@coordinator": 1}  # 10 for the others
# A call that has not ended in a minute hangs. `make test` runs the fuzzing at the lowest CPU
# priority beside the rest of the suite, so a batch may wait a while for a core; a deadline
# any shorter would call that wait a hang. (Every answer here takes milliseconds of CPU.)
TIMEOUT = 60.0

MODEL = "sface-2021dec-int8bq"
DIM = 128
UNIT = "dublin-unit-1"
OPERATOR = "officer-1"
AUDITOR = "auditor-edps"
PARAMS = DEFAULT_PARAM_SET.name
THRESHOLD_VERSION = "2026-11-v1"
APPLICATION_DATE = "2026-11-21"
LONG = "m" * 20_000  # a value longer than gRPC's 16 KiB bound on a status message

C = grpc.StatusCode
IA, PD, NF = C.INVALID_ARGUMENT, C.PERMISSION_DENIED, C.NOT_FOUND
FP, AE, RE = C.FAILED_PRECONDITION, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED
ANY_KIND = frozenset({"raw", "mutant", "struct", "deep"})
DEEP_ONLY = frozenset({"deep"})
NEVER: frozenset[str] = frozenset()

# An input: its kind and its body, or a function building the body when it is sent (fresh
# nonces, signatures over the current time, the coordinator's current record).
Body = bytes | Callable[[], bytes]
Case = tuple[str, Body]
Strategy = st.SearchStrategy[Case]

_AUDIT_METHODS = ("GetCheckpoint", "GetEntries", "GetInclusionProof", "GetConsistencyProof")


@dataclass(frozen=True)
class Rpc:
    server: str  # "coordinator" or the member state of a node
    caller: str  # whose mTLS credentials make the call (see tests.federation.security)
    method: str  # "Service/Method" of fedmatch.rpc.v1, or a full path
    request: type[Message]
    response: type[Message]
    # The codes a body that parses may get besides OK; see RPCS for the reasons.
    expected: frozenset[grpc.StatusCode]
    ok: frozenset[str]  # the kinds of input that can legitimately succeed
    deep_caller: str = ""  # who sends the deep inputs, if not ``caller``

    @property
    def path(self) -> str:
        return self.method if self.method.startswith("/") else f"/fedmatch.rpc.v1.{self.method}"

    @property
    def name(self) -> str:
        return f"{self.method.rsplit('/', 1)[-1]}@{self.server}"


# Every audit read is authorized by the auditor's signature first: a query that does not
# parse, is too long or has a bad nonce is INVALID_ARGUMENT; an unknown auditor, a bad
# signature, another method, a time outside the window or a reused nonce PERMISSION_DENIED;
# a range or tree size outside the log INVALID_ARGUMENT. Only signed queries can succeed.
AUDIT_CODES = frozenset({IA, PD})
_AUDIT_RESPONSES: dict[str, type[Message]] = {
    "GetCheckpoint": apb.CheckpointResponse,
    "GetEntries": apb.EntriesResponse,
    "GetInclusionProof": apb.ProofResponse,
    "GetConsistencyProof": apb.ProofResponse,
}
_AUDIT_RPCS = [
    Rpc(server, AUDITOR, f"AuditService/{m}", apb.AuditRequest, response, AUDIT_CODES, DEEP_ONLY)
    for server in ("coordinator", "IT")
    for m, response in _AUDIT_RESPONSES.items()
]

RPCS: dict[str, Rpc] = {
    rpc.name: rpc
    for rpc in [
        # Federation facts are for every operator: a request with a well-formed header is
        # answered (OK, from any kind); a missing or malformed header is INVALID_ARGUMENT.
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/GetFederation",
            cpb.FederationRequest, cpb.FederationInfo, frozenset({IA}), ANY_KIND,
        ),
        # Header or bundle fields, a secret key on the wire: INVALID_ARGUMENT; a state
        # without a node, a key id another state registered: PERMISSION_DENIED; material no
        # node could load: FAILED_PRECONDITION ("no node accepted"); beyond the state's
        # quota of new bundles (issue 21: a registration flood): RESOURCE_EXHAUSTED, before
        # any node is asked. No input here is a valid public bundle, so none succeeds.
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/RegisterKeys",
            pb.RegisterKeysRequest, cpb.KeyRegistration, frozenset({IA, PD, FP, RE}), NEVER,
        ),
        # Header, probe shape (size, key id form, dimension): INVALID_ARGUMENT; another
        # model, an unknown key id: FAILED_PRECONDITION; a key of another state, a header of
        # another state than the caller's, a missing, malformed or wrong signature:
        # PERMISSION_DENIED (INVALID_ARGUMENT for a statement that does not decode). Deep
        # inputs (signed by FR, malformed ciphertexts) succeed with every node REFUSED.
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/Lookup",
            cpb.LookupRequest, cpb.LookupResponse, frozenset({IA, PD, FP}), DEEP_ONLY,
            "operator-FR",
        ),
        # As Lookup for the header and the signature; a malformed date, hits or verifiers:
        # INVALID_ARGUMENT; too few verifiers: PERMISSION_DENIED; no pending lookup of that
        # query id: NOT_FOUND (only behind a valid signature). Deep inputs naming a pending
        # lookup and no hits get a decision (OK).
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/Resolve",
            cpb.ResolveRequest, cpb.ResolveResponse, frozenset({IA, PD, NF}), DEEP_ONLY,
            "operator-FR",
        ),
        # As Resolve for the header and the signature (a "packets" request naming the probe
        # image's SHA-256); malformed hits, openings or probe_image_sha256, hits at a node
        # that did not answer the lookup, none or one twice: INVALID_ARGUMENT; a probe image
        # other than the one declared before, a fourth request for a lookup:
        # PERMISSION_DENIED; no pending lookup of that query id: NOT_FOUND (only
        # behind a valid signature). Deep inputs naming a lookup both nodes answered and hits
        # at them are relayed (OK), every node asked refusing: no input carries an opening.
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/GetVerificationPackets",
            cpb.VerificationPacketsRequest, cpb.VerificationPacketsResponse,
            frozenset({IA, PD, NF}), DEEP_ONLY, "operator-FR",
        ),
        # A data subject's states answer: as Resolve for the header and the signature (an
        # "answer" request); malformed hits or verdicts, a purpose other than a data-subject
        # request: INVALID_ARGUMENT; a verdict that does not verify: PERMISSION_DENIED; no
        # pending lookup of that query id: NOT_FOUND (only behind a valid signature). No
        # structured input is signed right, so none is answered.
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/AnswerDataSubject",
            cpb.DataSubjectAnswerRequest, cpb.DataSubjectAnswerResponse,
            frozenset({IA, PD, NF}), NEVER,
        ),
        # An official's confirmation of a case proposal: a malformed header, digest, action or
        # override: INVALID_ARGUMENT; a state without a node, a missing, malformed or wrong
        # signature (another kind, another body, another state's operator): PERMISSION_DENIED.
        # No structured input is signed right, so none reaches the case store (NOT_FOUND).
        Rpc(
            "coordinator", "operator-DE", "CoordinatorService/ConfirmDecision",
            cpb.ConfirmDecisionRequest, cpb.ConfirmDecisionResponse, frozenset({IA, PD}), NEVER,
        ),
        # Enrolment is signed by an officer of the node's state (the structured inputs are,
        # see _officer_signed): a well-formed record of the node's own state is enrolled
        # (OK), a reused reference is ALREADY_EXISTS, another model FAILED_PRECONDITION,
        # another state, a missing, garbage or foreign signature, an operator who is not the
        # signer PERMISSION_DENIED, anything malformed (photos that do not decode or show no
        # usable face included) INVALID_ARGUMENT.
        Rpc(
            "IT", "operator-IT", "NodeService/Enroll",
            npb.EnrollRequest, npb.EnrollResponse, frozenset({IA, PD, FP, AE}), ANY_KIND,
        ),
        # A malformed header or bundle, or one that does not load (HEError):
        # INVALID_ARGUMENT; a key id registered by another state: PERMISSION_DENIED; beyond
        # the state's quota of new bundles: RESOURCE_EXHAUSTED, unopened.
        Rpc(
            "IT", "coordinator", "NodeService/RegisterKeys",
            pb.RegisterKeysRequest, npb.RegisterKeysResponse, frozenset({IA, PD, RE}), NEVER,
        ),
        # Off the record, unsigned or badly signed, another state's key, the node's own
        # state: PERMISSION_DENIED; a malformed header, probe, proof or ciphertext:
        # INVALID_ARGUMENT; another threshold version, model or parameter set, an unknown
        # key id: FAILED_PRECONDITION; deep inputs are charged to FR's search rate:
        # RESOURCE_EXHAUSTED once it is used up. Never OK: no input may cause HE work.
        Rpc(
            "IT", "coordinator", "NodeService/Search",
            npb.SearchRequest, npb.SearchResponse, frozenset({IA, PD, FP, RE}), NEVER,
        ),
        # No, too many or malformed handles: INVALID_ARGUMENT; off the record or badly
        # signed: PERMISSION_DENIED; handles of a query this node never answered (deep):
        # NOT_FOUND.
        Rpc(
            "IT", "coordinator", "NodeService/GetHitDetails",
            npb.HitDetailsRequest, npb.HitDetailsResponse, frozenset({IA, PD, NF}), NEVER,
        ),
        # As GetHitDetails (a packets_authorized entry, a "packets" request naming the probe
        # image); a malformed probe_image_sha256: INVALID_ARGUMENT; a query this node never
        # answered (deep, a data-subject request's among them): NOT_FOUND; one it
        # answered (deep), without a valid opening (no input has one): PERMISSION_DENIED.
        Rpc(
            "IT", "coordinator", "NodeService/GetVerificationPackets",
            npb.PacketsRequest, npb.PacketsResponse, frozenset({IA, PD, NF}), NEVER,
        ),
        # Rejections relayed by the coordinator: a malformed header or verdict (statement,
        # signature or chain size), none or too many, a confirmation or another node's hit:
        # INVALID_ARGUMENT; an unsigned verdict, a bad signature or chain, a signer who is not
        # a verifier of the requesting state or not the one named, another query, a date in
        # the future, a hit whose packet was never released: PERMISSION_DENIED; a query this
        # node never answered (deep): NOT_FOUND. Never OK: no packet is ever released.
        Rpc(
            "IT", "coordinator", "NodeService/ReportRejections",
            npb.ReportRejectionsRequest, npb.ReportRejectionsResponse, frozenset({IA, PD, NF}),
            NEVER,
        ),
        # As GetFederation.
        Rpc(
            "IT", "coordinator", "NodeService/GetInfo",
            npb.InfoRequest, npb.InfoResponse, frozenset({IA}), ANY_KIND,
        ),
        # A note the coordinator did not sign: PERMISSION_DENIED; a malformed proof:
        # INVALID_ARGUMENT; a coordinator checkpoint inconsistent with the one cosigned:
        # FAILED_PRECONDITION (evidence kept). A real checkpoint is cosigned and a stale
        # old_size is answered with a conflict: both OK, from any kind.
        Rpc(
            "IT", "coordinator", "WitnessService/AddCheckpoint",
            apb.AddCheckpointRequest, apb.AddCheckpointResponse, frozenset({IA, PD, FP}),
            ANY_KIND,
        ),
        # Record lifecycle, for IT's own operators (node/lifecycle.py), signed as enrolment
        # is: a malformed header, reference, reason, kind or state: INVALID_ARGUMENT;
        # another state's header or a signature refused as for enrolment:
        # PERMISSION_DENIED; an unknown reference or inbox item: NOT_FOUND; an item already
        # acknowledged: FAILED_PRECONDITION. Marking a seeded record, routing a request,
        # listing and acknowledging can succeed; an erasure never does (no input names a
        # record: the fuzzing must not shrink the register).
        Rpc(
            "IT", "operator-IT", "NodeService/MarkRecord",
            npb.MarkRecordRequest, npb.LifecycleResponse, frozenset({IA, PD, NF}), ANY_KIND,
        ),
        # A record's Dublin status: a malformed field or date, one in the future or before
        # the event: INVALID_ARGUMENT; an own-hit link to a record: both can succeed.
        Rpc(
            "IT", "operator-IT", "NodeService/SetRecordStatus",
            npb.SetRecordStatusRequest, npb.LifecycleResponse, frozenset({IA, PD, NF}),
            ANY_KIND,
        ),
        Rpc(
            "IT", "operator-IT", "NodeService/LinkOwnHit",
            npb.LinkOwnHitRequest, npb.LifecycleResponse, frozenset({IA, PD, NF}), ANY_KIND,
        ),
        Rpc(
            "IT", "operator-IT", "NodeService/EraseRecord",
            npb.EraseRecordRequest, npb.LifecycleResponse, frozenset({IA, PD, NF}), NEVER,
        ),
        Rpc(
            "IT", "operator-IT", "NodeService/RouteRightsRequest",
            npb.RouteRightsRequestRequest, npb.RouteRightsRequestResponse, frozenset({IA, PD}),
            ANY_KIND,
        ),
        Rpc(
            "IT", "operator-IT", "NodeService/ListInbox",
            npb.ListInboxRequest, npb.ListInboxResponse, frozenset({IA, PD}), ANY_KIND,
        ),
        Rpc(
            "IT", "operator-IT", "NodeService/AcknowledgeInbox",
            npb.AcknowledgeInboxRequest, npb.InboxItem, frozenset({IA, PD, NF, FP}), ANY_KIND,
        ),
        # A notice relayed by the coordinator: malformed: INVALID_ARGUMENT; not signed by
        # its sending node (no generated input is) or for another state: PERMISSION_DENIED;
        # a notice id received before with other content: FAILED_PRECONDITION. Never OK.
        Rpc(
            "IT", "coordinator", "NodeService/DeliverNotice",
            npb.DeliverNoticeRequest, npb.DeliverNoticeResponse, frozenset({IA, PD, FP}),
            NEVER,
        ),
        # A node's notice: malformed: INVALID_ARGUMENT; in another state's name:
        # PERMISSION_DENIED; to a state without a node, or to itself: NOT_FOUND; the receiving
        # node's refusal is passed on (PERMISSION_DENIED for a notice IT's node did not sign,
        # as no generated input is). Never OK.
        Rpc(
            "coordinator", "node-IT", "CoordinatorService/RelayNotice",
            cpb.RelayNoticeRequest, cpb.RelayNoticeResponse, frozenset({IA, PD, NF, FP}),
            NEVER,
        ),
        *_AUDIT_RPCS,
        # The standard health service: "" is SERVING (OK), any other name NOT_FOUND.
        Rpc(
            "coordinator", "operator-DE", "/grpc.health.v1.Health/Check",
            hpb.HealthCheckRequest, hpb.HealthCheckResponse, frozenset({NF}), ANY_KIND,
        ),
        Rpc(
            "IT", "coordinator", "/grpc.health.v1.Health/Check",
            hpb.HealthCheckRequest, hpb.HealthCheckResponse, frozenset({NF}), ANY_KIND,
        ),
    ]
}  # fmt: skip

# Deep (correctly signed) inputs per RPC. Searches are charged to FR's rate (120 a minute
# at each node): 5 + 40 lookups and 60 searches stay within it (a packet request is charged
# only when packets are released, which no input achieves). Deep lookups are sent one at
# a time, as one requester would: concurrent lookups race in the coordinator's witness rounds
# (coordinator/witnessing.py), which is not what this test is about.
DEEP = {
    "Lookup@coordinator": 40,
    "Resolve@coordinator": 200,
    "Search@IT": 60,
    "GetHitDetails@IT": 200,
    "GetVerificationPackets@coordinator": 200,
    "GetVerificationPackets@IT": 200,
    "ReportRejections@IT": 200,
    **{f"{m}@{s}": 2_000 for m in _AUDIT_METHODS for s in ("coordinator", "IT")},
}


# -- the federation under fuzz ----------------------------------------------------------


@dataclass(frozen=True)
class HeObjects:
    """Real HE objects, right and wrong (under FR's key unless said otherwise)."""

    ciphertext: bytes  # a real probe
    bad_ciphertexts: tuple[bytes, ...]  # load, but are not a probe of the parameter set
    parms: bytes
    public_key: bytes
    galois_keys: bytes  # the real rotation keys (~35 MB): for a few explicit inputs only
    relin_keys: bytes
    few_galois: bytes  # one real rotation key of the right set, not all of them
    secret_key: bytes
    other_parms: bytes  # another parameter set (N = 4096)
    other_public_key: bytes
    other_galois: bytes


@dataclass(frozen=True)
class OnRecord:
    """A DE request the coordinator logged and IT witnessed; struct inputs send it with its
    signature corrupted. Even intact it would be refused: the search's entry names a
    truncated ciphertext, and no search at IT ever answered the resolve's or the packet
    request's query."""

    header: QueryHeader
    signed: SignedRequest
    authorization: pb.LogAuthorization
    ciphertext: bytes = b""
    handles: tuple[bytes, ...] = ()
    probe_image: str = ""  # the SHA-256 a packet request names


_SIGNERS: dict[tuple[str, str], RequestSigner] = {}
_EXPERTS: dict[tuple[str, str, str], tuple[VerdictSigner, str]] = {}


def _signer(fed: Federation, state: str) -> RequestSigner:
    """An operator workstation's request signer (loaded once: many inputs are signed)."""
    key = (str(fed.tmp), state)
    if key not in _SIGNERS:
        _SIGNERS[key] = request_signer(fed.tmp, state)
    return _SIGNERS[key]


def _expert(fed: Federation, state: str, person: str) -> tuple[VerdictSigner, str]:
    """A hit verifier's workstation and certificate name (loaded once, as :func:`_signer`)."""
    key = (str(fed.tmp), state, person)
    if key not in _EXPERTS:
        signer = expert(fed.tmp, state, person)
        _EXPERTS[key] = (signer, signer.name)
    return _EXPERTS[key]


@dataclass
class Kit:
    fed: Federation
    he: HeObjects
    search: OnRecord  # a search_authorized entry of a DE lookup
    hits: OnRecord  # a hit_verified entry of a DE resolve
    packets: OnRecord  # a packets_authorized entry of a DE packet request
    chains: dict[str, bytes]  # every party's certificate chain (PEM)
    auditor: NoteSigner
    coordinator_signer: NoteSigner
    images: tuple[bytes, ...]  # small PNG and JPEG images without a face
    templates: tuple[tuple[float, ...], ...]  # unit vectors
    completed_searches: Callable[[], int]
    pending: list[QueryHeader] = field(default_factory=list)  # FR lookups nodes refused
    answered: list[QueryHeader] = field(default_factory=list)  # FR lookups nodes answered
    channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)
    calls: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def channel(self, server: str, caller: str) -> grpc.Channel:
        if (server, caller) not in self.channels:
            if server == "coordinator":
                address, name = self.fed.coordinator_server.address, dns_name("coordinator", "eu")
            else:
                address, name = self.fed.servers[server].address, dns_name("node", server)
            credentials = security(self.fed.tmp, caller).channel_credentials()
            self.channels[server, caller] = make_channel(
                address, 64 << 20, MAX_RECEIVE_BYTES + (4 << 20), credentials, name
            )
        return self.channels[server, caller]

    def call(self, server: str, caller: str, path: str) -> Any:
        """The method at ``path`` of ``server`` as ``caller``, on raw bytes both ways."""
        if (server, caller, path) not in self.calls:
            self.calls[server, caller, path] = self.channel(server, caller).unary_unary(
                path, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
        return self.calls[server, caller, path]

    def sign(self, state: str, h: QueryHeader, kind: str, probe_hash: str = "") -> SignedRequest:
        return _signer(self.fed, state).sign(h, kind, probe_hash)

    def sign_action(self, request: Message, method: str) -> Message:
        """``request`` signed by officer-1 of its header's state (IT's for a state with no
        officer here) as an officer signs a node-direct action, exactly as its header
        reads, whatever operator that names (the node refuses a mismatch)."""
        h = header_from_pb(request.header)  # type: ignore[attr-defined]
        state = h.requesting_state if h.requesting_state in ("DE", "IT") else "IT"
        signer = _signer(self.fed, state)
        signed = sign_request(
            signer.key, signer.chain_pem, h, NODE_ACTIONS[method], signer.categories,
            action_digest(request),
        )  # fmt: skip
        out = type(request)()
        out.CopyFrom(request)
        out.header.CopyFrom(header_to_pb(h, signed))  # type: ignore[attr-defined]
        return out

    def log_of(self, server: str) -> Any:
        party = self.fed.coordinator if server == "coordinator" else self.fed.nodes[server]
        return party.audit.log


def _he_objects() -> HeObjects:
    keys = shared_keys("FR")
    ctx = DEFAULT_PARAM_SET.context()
    ciphertext = keys.encrypt_probe(np.eye(DIM)[0])
    ct = seal.Ciphertext()
    query, _ = uniform.open_probe_bytes(DEFAULT_PARAM_SET, ciphertext)
    sealio.load_bytes(lambda p: ct.load(ctx, p), query, "probe")
    evaluator = seal.Evaluator(ctx)
    lower = seal.Ciphertext()
    evaluator.mod_switch_to_next(ct, lower)
    three = seal.Ciphertext()
    evaluator.multiply(ct, ct, three)
    bundle = keys.public_bundle()
    public = open_key_bundle(bundle).public_key
    plain = seal.Plaintext()
    seal.CKKSEncoder(ctx).encode([0.1] * 8, ctx.first_parms_id(), 2.0**30, plain)
    odd_scale = seal.Ciphertext()
    seal.Encryptor(ctx, public).encrypt(plain, odd_scale)
    other = ParamSet("ckks-n4096-fuzz", 4096, (40, 20, 40), 30, 15, (20, 30), 10, 16)
    octx = other.context()
    keygen = seal.KeyGenerator(octx)
    other_pk = seal.PublicKey()
    keygen.create_public_key(other_pk)
    other_galois = seal.GaloisKeys()
    keygen.create_galois_keys([other.galois_elements()[0]], other_galois)
    oplain = seal.Plaintext()
    seal.CKKSEncoder(octx).encode([0.1] * 8, octx.first_parms_id(), 2.0**30, oplain)
    other_ct = seal.Ciphertext()
    seal.Encryptor(octx, other_pk).encrypt(oplain, other_ct)
    few = seal.GaloisKeys()
    seal.KeyGenerator(ctx).create_galois_keys([DEFAULT_PARAM_SET.galois_elements()[0]], few)
    return HeObjects(
        ciphertext=ciphertext,
        bad_ciphertexts=tuple(as_sent(c) for c in (lower, three, odd_scale, other_ct)),
        parms=bundle.parms,
        public_key=bundle.public_key,
        galois_keys=bundle.galois_keys,
        relin_keys=bundle.relin_keys,
        few_galois=sealio.to_bytes(few),
        secret_key=keys.private_bundle().secret_key,
        other_parms=sealio.to_bytes(other.parms()),
        other_public_key=sealio.to_bytes(other_pk),
        other_galois=sealio.to_bytes(other_galois),
    )


def _lookup_event(h: QueryHeader, ciphertext: bytes, key_id: str, signed: SignedRequest) -> Any:
    """The coordinator's search_authorized entry for a signed lookup of ``h`` at IT."""
    return header_event(
        EventKind.SEARCH_AUTHORIZED,
        h,
        probe_hash=digest_hex(ciphertext),
        registers=["IT"],
        labels={"key_id": key_id, "request": signed.digest()},
    )


def _hits_event(h: QueryHeader, handles: Sequence[bytes], signed: SignedRequest) -> Any:
    """The coordinator's hit_verified entry for ``handles`` at IT."""
    return header_event(
        EventKind.HIT_VERIFIED,
        h,
        registers=["IT"],
        verifiers=VERIFIERS,
        outcome="confirmed",
        counts={"it": len(handles)},
        labels={"handles_it": handles_digest(handles), "request": signed.digest()},
    )


def _packets_event(h: QueryHeader, handles: Sequence[bytes], signed: SignedRequest) -> Any:
    """The coordinator's packets_authorized entry for ``handles`` at IT."""
    return header_event(
        EventKind.PACKETS_AUTHORIZED,
        h,
        registers=["IT"],
        outcome="authorized",
        counts={"it": len(handles)},
        labels={"handles_it": handles_digest(handles), "request": signed.digest()},
    )


def _fr_lookup(kit: Kit, ciphertext: bytes) -> cpb.LookupRequest:
    """A lookup of FR for ``ciphertext``, signed by FR's operator."""
    h = header("FR")
    probe = EncryptedProbe(PARAMS, ciphertext, MODEL, DIM, shared_keys("FR").key_id)
    signed = kit.sign("FR", h, "lookup", digest_hex(ciphertext))
    return cpb.LookupRequest(header=header_to_pb(h, signed), probe=probe_to_pb(probe))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    tmp = tmp_path_factory.mktemp("fuzz-rpcs")
    # Threads enough that a batch of BATCH calls from one caller is within its share of a
    # server (a quarter of the coordinator's, half of a node's): the shares themselves are
    # tested in test_peer_shares.py; here every input must reach the handlers.
    # The coordinator's deadline for a node's answer is long for the same reason as TIMEOUT.
    with federation(tmp, records=20, max_workers=4 * BATCH + 28, node_deadline=45.0) as fed:
        completed: Counter[str] = Counter()
        for state, node in fed.nodes.items():
            real = node.engine.search

            def counted(*args: Any, _real: Any = real, _state: str = state, **kw: Any) -> Any:
                out = _real(*args, **kw)
                completed[_state] += 1  # only a search that ran to its end did HE work
                return out

            node.engine.search = counted  # type: ignore[method-assign]
        fed.requester("DE").register_keys(header("DE"))
        fed.requester("FR").register_keys(header("FR"))
        he = _he_objects()
        # A DE search and a DE resolve on the coordinator's record, witnessed by IT.
        h, truncated = header("DE"), he.ciphertext[:-1]
        signed = _signer(fed, "DE").sign(h, "lookup", digest_hex(truncated))
        auth = fed.authorize(_lookup_event(h, truncated, shared_keys("DE").key_id, signed), ["IT"])
        search = OnRecord(h, signed, authorization_to_pb(auth), ciphertext=truncated)
        h, handles = header("DE"), (encode_handle(0, 1), encode_handle(0, 2))
        signed = _signer(fed, "DE").sign(h, "resolve")
        auth = fed.authorize(_hits_event(h, handles, signed), ["IT"])
        hits = OnRecord(h, signed, authorization_to_pb(auth), handles=handles)
        h, image = header("DE"), image_digest(b"a probe image")
        signed = _signer(fed, "DE").sign(h, "packets", image)
        auth = fed.authorize(_packets_event(h, handles, signed), ["IT"])
        packets = OnRecord(h, signed, authorization_to_pb(auth), handles=handles, probe_image=image)
        parties = pki(tmp)
        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(8, DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        images = []
        for ext in (".png", ".jpg"):
            ok, encoded = cv2.imencode(ext, rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
            assert ok
            images.append(encoded.tobytes())
        kit = Kit(
            fed=fed,
            he=he,
            search=search,
            hits=hits,
            packets=packets,
            chains={p: parties[p].tls.chain.read_bytes() for p in parties},
            auditor=parties[AUDITOR].signer(),
            coordinator_signer=parties["coordinator"].signer(),
            images=tuple(images),
            templates=tuple(tuple(float(x) for x in v) for v in vectors),
            completed_searches=lambda: sum(completed.values()),
        )
        # FR lookups pending at the coordinator: three that every node refused (truncated
        # ciphertexts), for the deep resolves and packet requests, and two that both nodes
        # answered (the whole probe), for the deep packet requests, which then reach the
        # nodes (at IT too: the node's deep packet requests and rejections may name them).
        lookup = kit.call(
            "coordinator", "operator-FR", "/fedmatch.rpc.v1.CoordinatorService/Lookup"
        )
        for n in (100, 1000, 5000, None, None):
            request = _fr_lookup(kit, he.ciphertext[:n])
            response = cpb.LookupResponse.FromString(
                lookup(request.SerializeToString(), timeout=60)
            )
            outcome = cpb.NODE_OUTCOME_REFUSED if n else cpb.NODE_OUTCOME_OK
            assert [x.outcome for x in response.nodes] == [outcome] * 2
            q = request.header
            (kit.pending if n else kit.answered).append(
                QueryHeader(
                    q.query_id, "FR", Purpose.ASYLUM_DUBLIN, q.legal_basis, q.case_reference,
                    UNIT, OPERATOR,
                )
            )  # fmt: skip
        completed.clear()  # the fixture's own searches: no fuzz input made a node do them
        # grpcio logs a traceback for every body that does not parse: thousands per RPC.
        grpc_log = logging.getLogger("grpc._common")
        level = grpc_log.level
        grpc_log.setLevel(logging.CRITICAL)
        try:
            yield kit
        finally:
            grpc_log.setLevel(level)
            for channel in kit.channels.values():
                channel.close()


# -- hostile values ---------------------------------------------------------------------

NASTY_TEXT = [
    "", " ", "\x00", "\n", "\t\r\n", "DE", "de", "ＤＥ", "D\u0301E", "\u202eED", "\ufeffDE",
    "\u200b", "XX", "EU", "ZZ", "0" * 32, "A" * 32, "g" * 32, "a" * 256, "a" * 257, "é" * 300,
    "🙂" * 70, "../../etc/passwd", "%s%n%x", "'; DROP TABLE records; --",
    "— fedmatch/coordinator AAAA", "null", "Art.\n27", "Art. 27\x00", "case\x1b[31m",
]  # fmt: skip
NASTY_BYTES = [b"", b"\x00", b"\x00" * 8, b"\xff" * 8, b"\x00" * 32, b"\xff" * 33, b"\n" * 64]
EDGE_UINT64 = [0, 1, 2, 3, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63]
EDGE_UINT64 += [2**64 - 1]
# Statements that are not what verify_request expects; deep nesting and the bounds included.
NASTY_JSON = [
    b"[" * 4000, b"[" * 2000 + b"]" * 2000, b'{"a":' * 800 + b"1" + b"}" * 800, b"{}", b"[]",
    b"null", b"1e999999", b"NaN", b'"\\ud800"', b"\xef\xbb\xbf{}", b'{"v":1}',
    b'{"v":1,"kind":"lookup"}', b"\xff\xfe{\x00}\x00", b"{}" + b" " * (MAX_STATEMENT_BYTES - 1),
]  # fmt: skip

TEXT = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=40),
    st.text(max_size=300),
    st.integers(257, 20_000).map(lambda n: "x" * n),
)
SHORT_TEXT = st.one_of(st.sampled_from(NASTY_TEXT[:20]), st.text(max_size=12))
STATE = st.one_of(st.sampled_from(["DE", "IT", "FR", "ES", "XX", "EU", "", "de", "D"]), TEXT)
SMALL_BYTES = st.one_of(st.sampled_from(NASTY_BYTES), st.binary(max_size=64))
BYTES = st.one_of(SMALL_BYTES, st.binary(max_size=4096))
UINT64 = st.one_of(st.integers(0, 64), st.sampled_from(EDGE_UINT64), st.integers(0, 2**64 - 1))
UINT32 = st.one_of(st.sampled_from([0, 1, 127, 129, 4096, 2**32 - 1]), st.integers(0, 2**32 - 1))
INT64 = st.one_of(st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1]), st.integers(-(2**63), -1))
INT32 = st.one_of(st.integers(-3, 3), st.integers(-(2**31), 2**31 - 1))
ENUM = st.one_of(st.integers(-1, 8), st.integers(-(2**31), 2**31 - 1))
HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
POS = st.integers(0, 1 << 16)  # a position, taken modulo the length it applies to
DATE = st.one_of(
    st.dates(dt.date(1990, 1, 1), dt.date(2026, 11, 21)).map(dt.date.isoformat),
    st.sampled_from(["", "2026-02-30", "2026-13-01", "0000-01-01", "9999-12-31", "20261121"]),
    st.sampled_from(["2026-1-1", "+002026-01-01", "2026-11-21T00:00", "2026-W47-6", "२०२६"]),
    TEXT,
)
HASHES = st.one_of(
    st.lists(st.binary(min_size=32, max_size=32), max_size=70),
    st.lists(st.binary(max_size=40), max_size=6),
    st.integers(0, 5_000).map(lambda n: [b"\x00" * 32] * n),
)
# A probe image's SHA-256 ("" for none), well-formed or not.
IMAGE_DIGESTS = st.one_of(
    st.just(""),
    HEX64,
    HEX64.map(str.upper),
    st.sampled_from(["0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, "0" * 64 + "\n"]),
    TEXT,
)
# Sealed openings: short, random, at and one byte over the bound.
SEALED = st.one_of(
    SMALL_BYTES,
    st.binary(min_size=33, max_size=600),
    st.sampled_from([MAX_SEALED_BYTES, MAX_SEALED_BYTES + 1]).map(lambda n: b"\x05" * n),
)
_MUTATIONS = st.sampled_from(["flip", "truncate", "insert", "delete", "repeat"])
_NUMBERS = ("start", "end", "index", "tree_size", "size1", "size2")


def _flip(data: bytes, pos: int, xor: int = 1) -> bytes:
    out = bytearray(data)
    out[pos % len(out)] ^= xor
    return bytes(out)


def _mutants(seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of ``seed``: flips, truncations, insertions, deletions, repeats."""

    @st.composite
    def mutant(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            op, pos = draw(_MUTATIONS), draw(POS) % (len(data) + 1)
            if op == "flip" and pos < len(data):
                data[pos] ^= draw(st.integers(1, 255))
            elif op == "truncate":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            elif op == "delete":
                del data[pos : pos + draw(st.integers(1, 16))]
            else:
                data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
        return bytes(data)

    return mutant()


def _hostile(
    valid: dict[str, Any], hostile: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` fields, half of the time with one to three replaced by hostile values."""
    names = st.one_of(
        st.just(frozenset[str]()),
        st.frozensets(st.sampled_from(sorted(hostile)), min_size=1, max_size=3),
    )

    @st.composite
    def fields(draw: st.DrawFn) -> dict[str, Any]:
        out = dict(valid)
        for name in sorted(draw(names)):
            out[name] = draw(hostile[name])
        return out

    return fields()


_HOSTILE_HEADER: dict[str, st.SearchStrategy[Any]] = {
    "query_id": st.one_of(TEXT, HEX32.map(str.upper)),
    "requesting_state": STATE,
    "purpose": ENUM,
    "legal_basis": TEXT,
    "case_reference": TEXT,
    "requesting_unit": TEXT,
    "operator_id": TEXT,
}


def _garbage_signatures(kit: Kit) -> st.SearchStrategy[pb.RequestSignature]:
    """Signed statements that are garbage: random or hostile statements and chains."""
    real = st.sampled_from(sorted(kit.chains.values()))
    chains = st.one_of(
        real,
        st.tuples(real, POS).map(lambda t: t[0][: t[1] % len(t[0])]),
        BYTES,
        st.just(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        st.just(b"-" * (MAX_CHAIN_BYTES + 1)),
    )
    signatures = st.one_of(st.binary(min_size=64, max_size=64), SMALL_BYTES)
    return st.builds(
        pb.RequestSignature,
        statement=st.one_of(st.sampled_from(NASTY_JSON), BYTES),
        signature=signatures,
        signer_chain=chains,
        approval=st.one_of(st.just(b""), signatures),
        approver_chain=st.one_of(st.just(b""), chains),
    )


def _headers(kit: Kit, states: Sequence[str]) -> st.SearchStrategy[pb.RequestHeader | None]:
    """No header, or a header valid except for a few hostile fields (often none), possibly
    with a garbage signed statement."""
    signatures = _garbage_signatures(kit)

    @st.composite
    def one(draw: st.DrawFn) -> pb.RequestHeader:
        valid = {
            "query_id": draw(HEX32),
            "requesting_state": draw(st.sampled_from(states)),
            "purpose": draw(st.integers(1, 6)),
            "legal_basis": "Reg. (EU) 2024/1358 Art. 27",
            "case_reference": "CASE-FUZZ",
            "requesting_unit": UNIT,
            "operator_id": OPERATOR,
        }
        fields = draw(_hostile(valid, _HOSTILE_HEADER))
        if draw(st.booleans()):
            fields["signed"] = draw(signatures)
        return pb.RequestHeader(**fields)

    return st.one_of(st.none(), one(), one(), one())


CORRUPTIONS = (
    "flip-statement",
    "truncate-statement",
    "flip-signature",
    "short-signature",
    "truncate-chain",
    "flip-chain",
    "foreign-chain",
    "state-chain",
    "bad-approval",
    "other-kind",
    "other-probe",
    "other-signer",
    "nested-statement",
)


def _leaf_end(chain: bytes) -> int:
    return chain.index(b"-----END CERTIFICATE-----")


def _flip_chain(chain: bytes, pos: int) -> bytes:
    """``chain`` with a bit of its leaf certificate flipped."""
    at, bit = pos % _leaf_end(chain), 1 << (pos % 8)
    if chain[at] == 0x0A and bit == 1:
        bit = 2  # "\n" to "\v" is whitespace either way: the same PEM, not a corruption
    return _flip(chain, at, bit)


def _corrupt(
    kit: Kit, signed: SignedRequest, how: str, pos: int, h: QueryHeader, kind: str
) -> pb.RequestSignature:
    """A real signed statement for ``h``, made wrong in one way: ``how``."""
    statement, signature, chain = signed.statement, signed.signature, signed.signer_chain
    approval, approver = b"", b""
    if how == "flip-statement":
        statement = _flip(statement, pos, 1 << (pos % 8))
    elif how == "truncate-statement":
        statement = statement[: pos % len(statement)]
    elif how == "flip-signature":
        signature = _flip(signature, pos, 1 << (pos % 8))
    elif how == "short-signature":
        signature = signature[: pos % 64]
    elif how == "truncate-chain":  # within the leaf certificate (the leaf alone is valid)
        chain = chain[: pos % _leaf_end(chain)]
    elif how == "flip-chain":
        chain = _flip_chain(chain, pos)
    elif how == "foreign-chain":
        chain = kit.chains[("node-IT", AUDITOR, "coordinator", "verifier-DE")[pos % 4]]
    elif how == "state-chain":  # an operator of another state, signing for this one
        s = kit.sign("FR" if h.requesting_state != "FR" else "DE", h, kind)
        statement, signature, chain = s.statement, s.signature, s.signer_chain
    elif how == "bad-approval":
        approval, approver = secrets.token_bytes(64), kit.chains["verifier-DE"]
    elif how == "other-kind":
        s = kit.sign(h.requesting_state, h, "resolve" if kind == "lookup" else "lookup")
        statement, signature = s.statement, s.signature
    elif how == "other-probe":
        s = kit.sign(h.requesting_state, h, kind, digest_hex(secrets.token_bytes(8)))
        statement, signature = s.statement, s.signature
    elif how == "other-signer":  # FR's key, with the chain of the header's state
        signature = _signer(kit.fed, "FR").key.sign(STATEMENT_DOMAIN + statement)
    else:
        statement = b"[" * (1000 + pos % 3000)
    return pb.RequestSignature(
        statement=statement,
        signature=signature,
        signer_chain=chain,
        approval=approval,
        approver_chain=approver,
    )


_CORRUPTION = st.tuples(st.sampled_from(CORRUPTIONS), POS)


# -- structured inputs per RPC ----------------------------------------------------------


_HEAD = uniform.PROBE_HEAD_BYTES
_FLIPPABLE = [
    *range(8),
    *range(_HEAD - 4, _HEAD),
    *range(_HEAD, _HEAD + 6),
    *range(_HEAD + 8, _HEAD + 16),
]


def _ciphertexts(kit: Kit) -> st.SearchStrategy[bytes]:
    """Malformed probe ciphertexts: none opens as a probe of the parameter set."""
    real = kit.he.ciphertext
    return st.one_of(
        st.binary(min_size=1, max_size=4096),
        st.integers(1, len(real) - 1).map(lambda n: real[:n]),
        # A flip in the probe's magic, in the length of its first ciphertext, or in that
        # ciphertext's serialization header (bytes 6 and 7 are reserved and ignored). Not in
        # the seed or the commitment: any value there makes a well-formed probe.
        st.tuples(st.sampled_from(_FLIPPABLE), st.integers(1, 255)).map(
            lambda t: _flip(real, t[0], t[1])
        ),
        st.sampled_from(kit.he.bad_ciphertexts),
    )


def _probes(kit: Kit) -> st.SearchStrategy[pb.EncryptedProbe | None]:
    valid = {
        "he_param_set": PARAMS,
        "model_id": MODEL,
        "dimension": DIM,
        "key_id": shared_keys("DE").key_id,
    }
    hostile = {
        "he_param_set": st.one_of(st.just("ckks-n4096-fuzz"), TEXT),
        "model_id": TEXT,
        "dimension": UINT32,
        "key_id": st.one_of(st.just(shared_keys("FR").key_id), HEX64, TEXT),
    }
    fields = st.tuples(_hostile(valid, hostile), st.one_of(_ciphertexts(kit), SMALL_BYTES))
    probe = fields.map(lambda t: pb.EncryptedProbe(ciphertext=t[1], **t[0]))
    return st.one_of(st.none(), probe, probe, probe)


def _bundles(kit: Kit) -> st.SearchStrategy[pb.HEKeyBundle | None]:
    he = kit.he
    random_bundle = st.builds(
        pb.HEKeyBundle,
        he_param_set=st.one_of(st.just(PARAMS), TEXT),
        parms=st.one_of(st.sampled_from([he.parms, he.other_parms]), BYTES),
        public_key=st.one_of(st.sampled_from([he.public_key[:1000], he.other_public_key]), BYTES),
        galois_keys=BYTES,
        secret_key=st.one_of(st.just(b""), SMALL_BYTES),
    )
    # Real objects that are wrong (~0.5 to 1 MB each): each is refused for its own reason.
    real: dict[str, Any] = {
        "he_param_set": PARAMS, "parms": he.parms, "public_key": he.public_key,
        "relin_keys": he.relin_keys,
    }  # fmt: skip
    wrong: list[dict[str, Any]] = [
        real | {"galois_keys": he.galois_keys[:100_000]},  # truncated rotation keys
        real | {"galois_keys": he.few_galois},  # one rotation key, not all
        real | {"galois_keys": he.other_galois},  # rotation keys of another set
        real | {"galois_keys": he.public_key},  # a public key where rotation keys go
        real | {"galois_keys": he.few_galois, "secret_key": he.secret_key},
        real | {"parms": he.other_parms, "galois_keys": he.few_galois},
        real | {"public_key": he.other_public_key, "galois_keys": he.few_galois},
        real | {"public_key": he.public_key[:-1], "galois_keys": he.few_galois},
        real | {"he_param_set": "ckks-n4096-fuzz", "galois_keys": he.other_galois},
        real | {"he_param_set": PARAMS.upper(), "galois_keys": he.few_galois},
    ]
    wrong_bundle = st.sampled_from(wrong).map(lambda f: pb.HEKeyBundle(**f))
    return st.one_of(st.none(), *[random_bundle] * 6, wrong_bundle)


def _serialized(strategy: st.SearchStrategy[Message]) -> Strategy:
    return strategy.map(lambda m: ("struct", m.SerializeToString()))


def _officer_signed(kit: Kit, method: str, strategy: st.SearchStrategy[Message]) -> Strategy:
    """A node-direct operator action (enrolment, lifecycle) is refused unless an officer
    signed it: a structured input whose header parses and carries no garbage statement is
    signed when sent (a fresh nonce each), so that its other fields reach the handlers."""

    return strategy.map(lambda m: ("struct", _signed_body(kit, m, method)))


def _signed_body(kit: Kit, request: Message, method: str) -> Body:
    """``request`` as an officer signs it (see :meth:`Kit.sign_action`), built when sent (a
    fresh nonce and time each); as it is if its header does not parse or already carries
    a (garbage) statement: the node refuses it as it is."""
    h = request.header  # type: ignore[attr-defined]
    if not request.HasField("header") or h.HasField("signed"):
        return request.SerializeToString()
    try:
        header_from_pb(h)
    except FedmatchError:
        return request.SerializeToString()
    return lambda: kit.sign_action(request, method).SerializeToString()


def struct_federation(kit: Kit, server: str) -> Strategy:
    return _serialized(st.builds(cpb.FederationRequest, header=_headers(kit, ["DE", "IT"])))


def struct_info(kit: Kit, server: str) -> Strategy:
    return _serialized(st.builds(npb.InfoRequest, header=_headers(kit, ["DE", "IT", "FR"])))


def struct_health(kit: Kit, server: str) -> Strategy:
    names = ["", "fedmatch.rpc.v1.NodeService", "grpc.health.v1.Health", "grpc.health.v1"]
    return _serialized(
        st.builds(hpb.HealthCheckRequest, service=st.one_of(st.sampled_from(names), TEXT))
    )


def struct_register_keys(kit: Kit, server: str) -> Strategy:
    states = ["DE", "DE", "IT", "ES"] if server == "coordinator" else ["DE", "FR"]
    return _serialized(
        st.builds(pb.RegisterKeysRequest, header=_headers(kit, states), key_bundle=_bundles(kit))
    )


def struct_lookup(kit: Kit, server: str) -> Strategy:
    hostile = _serialized(
        st.builds(cpb.LookupRequest, header=_headers(kit, ["DE", "IT", "FR"]), probe=_probes(kit))
    )
    ciphertexts = _ciphertexts(kit)

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """A real header and probe (DE's registered key) with a corrupted signature."""
        (how, pos), ciphertext = draw(_CORRUPTION), draw(ciphertexts)

        def build() -> bytes:
            h = header("DE")
            signed = kit.sign("DE", h, "lookup", digest_hex(ciphertext))
            probe = EncryptedProbe(PARAMS, ciphertext, MODEL, DIM, shared_keys("DE").key_id)
            request = cpb.LookupRequest(header=header_to_pb(h), probe=probe_to_pb(probe))
            request.header.signed.CopyFrom(_corrupt(kit, signed, how, pos, h, "lookup"))
            return request.SerializeToString()

        return ("struct", build)

    return st.one_of(hostile, corrupted())


def _hits(states: st.SearchStrategy[str]) -> st.SearchStrategy[list[cpb.HitRef]]:
    handles = st.one_of(st.binary(min_size=8, max_size=8), SMALL_BYTES)
    hit = st.builds(cpb.HitRef, member_state=states, handle=handles)
    small = st.builds(cpb.HitRef, member_state=st.sampled_from(["IT", "FR", "ES"]), handle=handles)
    return st.one_of(
        st.lists(hit, max_size=8),
        st.lists(small, min_size=60, max_size=70),
        st.tuples(small, st.integers(65, 5_000)).map(lambda t: [t[0]] * t[1]),
    )


# verified_by is refused outright since hits are verified by signed verdicts: mostly empty,
# so that the fuzzed resolves still reach the deeper checks.
VERIFIED_BY: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]),
    st.just([]),
    st.just(["expert-a", "expert-b"]),
    st.lists(TEXT, max_size=5),
    st.integers(0, 5_000).map(lambda n: [f"e{i}" for i in range(n)]),
)


def struct_resolve(kit: Kit, server: str) -> Strategy:
    hostile = _serialized(
        st.builds(
            cpb.ResolveRequest,
            header=_headers(kit, ["DE", "FR"]),
            application_date=st.one_of(st.just(APPLICATION_DATE), DATE),
            hits=_hits(STATE),
            verified_by=VERIFIED_BY,
        )
    )
    hits = _hits(st.sampled_from(["IT", "FR"]))

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """A real header with a corrupted signature."""
        (how, pos), refs, verified_by = draw(_CORRUPTION), draw(hits), draw(VERIFIED_BY)

        def build() -> bytes:
            h = header("DE")
            signed = kit.sign("DE", h, "resolve")
            request = cpb.ResolveRequest(
                header=header_to_pb(h),
                application_date=APPLICATION_DATE,
                hits=refs,
                verified_by=verified_by,
            )
            request.header.signed.CopyFrom(_corrupt(kit, signed, how, pos, h, "resolve"))
            return request.SerializeToString()

        return ("struct", build)

    return st.one_of(hostile, corrupted())


def struct_answer(kit: Kit, server: str) -> Strategy:
    """Hostile answer requests, and real data-subject headers with a corrupted signature
    (each with hostile hits and garbage verdicts)."""
    garbage = st.builds(
        pb.HitVerdict,
        statement=st.one_of(st.sampled_from(NASTY_JSON), BYTES),
        signature=st.one_of(st.binary(min_size=64, max_size=64), SMALL_BYTES),
        signer_chain=st.one_of(st.sampled_from(sorted(kit.chains.values())), BYTES),
    )
    verdicts = st.lists(garbage, max_size=4)
    hostile = _serialized(
        st.builds(
            cpb.DataSubjectAnswerRequest,
            header=_headers(kit, ["DE", "FR"]),
            hits=_hits(STATE),
            verdicts=verdicts,
        )
    )
    hits = _hits(st.sampled_from(["IT", "FR"]))

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """A real data-subject header with a corrupted signature."""
        (how, pos), refs, vs = draw(_CORRUPTION), draw(hits), draw(verdicts)

        def build() -> bytes:
            h = header("DE", Purpose.DATA_SUBJECT_REQUEST)
            signed = kit.sign("DE", h, "answer")
            request = cpb.DataSubjectAnswerRequest(header=header_to_pb(h), hits=refs, verdicts=vs)
            request.header.signed.CopyFrom(_corrupt(kit, signed, how, pos, h, "answer"))
            return request.SerializeToString()

        return ("struct", build)

    return st.one_of(hostile, corrupted())


def struct_confirm(kit: Kit, server: str) -> Strategy:
    actions = st.one_of(st.sampled_from([0, 1, 2]), ENUM)
    hostile = _serialized(
        st.builds(
            cpb.ConfirmDecisionRequest,
            header=_headers(kit, ["DE", "FR"]),
            proposal_digest=st.one_of(HEX64, TEXT),
            action=actions,
            override_state=STATE,
            override_criterion=st.one_of(st.integers(0, 7), ENUM),
            reason=st.one_of(st.just(""), TEXT),
        )
    )

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """A real header and a well-formed acceptance with a corrupted signature."""
        (how, pos), digest = draw(_CORRUPTION), draw(HEX64)

        def build() -> bytes:
            h = header("DE")
            body = confirmation_digest(h.query_id, digest, "accept")
            signed = kit.sign("DE", h, "confirm", body)
            request = cpb.ConfirmDecisionRequest(
                header=header_to_pb(h), proposal_digest=digest, action=cpb.CONFIRM_ACTION_ACCEPT
            )
            request.header.signed.CopyFrom(_corrupt(kit, signed, how, pos, h, "confirm"))
            return request.SerializeToString()

        return ("struct", build)

    return st.one_of(hostile, corrupted())


def struct_enroll(kit: Kit, server: str) -> Strategy:
    # Valid references come from a small set: most valid enrolments are ALREADY_EXISTS
    # (each enrolled one re-encodes a block of the register).
    references = st.integers(0, 49).map(lambda n: f"IT-FUZZ-{n}")
    valid_record: dict[str, Any] = {
        "category": pb.CATEGORY_APPLICANT,
        "event_date": "2026-05-01",
        "event_place": "Lampedusa",
        "capture_date": "2026-05-01",
        "sex": pb.SEX_FEMALE,
        "operator_id": "op-1",
        "birth_date": "1990-05-17",
    }
    hostile_record: dict[str, st.SearchStrategy[Any]] = {
        "reference": TEXT,
        "category": ENUM,
        "event_date": DATE,
        "event_place": TEXT,
        "capture_date": DATE,
        "sex": ENUM,
        "operator_id": TEXT,
        "birth_date": DATE,
    }
    records = st.tuples(references, _hostile(valid_record, hostile_record)).map(
        lambda t: npb.RecordMetadata(**({"reference": t[0]} | t[1]))
    )
    floats = st.floats(width=32)
    units = st.sampled_from(kit.templates).map(list)
    values = st.one_of(
        units,
        units,
        units.map(lambda v: [x * 1.01 for x in v]),
        st.lists(floats, min_size=DIM, max_size=DIM),
        st.lists(floats, max_size=300),
        st.tuples(floats, st.integers(0, 70_000)).map(lambda t: [t[0]] * t[1]),
    )
    models = st.one_of(st.just(MODEL), TEXT)
    templates = st.builds(npb.Template, model_id=models, values=values)
    image = st.sampled_from(kit.images)
    photos = st.builds(
        npb.Photo,
        data=st.one_of(
            image,
            st.tuples(image, POS).map(lambda t: t[0][: t[1] % len(t[0])]),
            st.tuples(image, POS).map(lambda t: _flip(t[0], t[1], 0x55)),
            BYTES,
            st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        ),
        name=TEXT,
        pick=INT32,
    )
    captures: st.SearchStrategy[dict[str, Any]] = st.one_of(
        st.builds(dict, template=templates),
        st.builds(dict, template=templates),
        st.builds(dict, photo=photos),
        st.builds(dict),
    )
    hostile = st.builds(
        lambda h, r, c: npb.EnrollRequest(header=h, record=r, **c),
        _headers(kit, ["IT", "IT", "DE"]),
        st.one_of(st.none(), records, records, records),
        captures,
    )
    # A valid enrolment with at most one thing wrong: hypothesis rarely makes every part of
    # a request valid at once, and the checks after validation deserve inputs too.
    wrong = st.sampled_from(["nothing", "header", "record", "model", "values", "photo"])
    header_fields = sorted(_HOSTILE_HEADER)
    record_fields = sorted(hostile_record)

    @st.composite
    def one_wrong(draw: st.DrawFn) -> npb.EnrollRequest:
        what = draw(wrong)
        h = header_to_pb(header("IT"))
        h.query_id = draw(HEX32)
        if what == "header":
            name = draw(st.sampled_from(header_fields))
            setattr(h, name, draw(_HOSTILE_HEADER[name]))
        record = npb.RecordMetadata(reference=draw(references), **valid_record)
        if what == "record":
            name = draw(st.sampled_from(record_fields))
            setattr(record, name, draw(hostile_record[name]))
        template = npb.Template(model_id=MODEL, values=draw(units))
        if what == "model":
            template.model_id = draw(TEXT)
        elif what == "values":
            del template.values[:]
            template.values.extend(draw(values))
        if what == "photo":
            return npb.EnrollRequest(header=h, record=record, photo=draw(photos))
        return npb.EnrollRequest(header=h, record=record, template=template)

    return _officer_signed(kit, "Enroll", st.one_of(hostile, one_wrong()))


def _authorizations(real: pb.LogAuthorization) -> st.SearchStrategy[pb.LogAuthorization | None]:
    """A real authorization, intact or wrong in one field, a random one, or none."""
    random_auth = st.builds(
        pb.LogAuthorization,
        entry=st.one_of(BYTES, st.just(b"\x00" * (MAX_ENTRY_BYTES + 1))),
        index=UINT64,
        tree_size=UINT64,
        inclusion_proof=HASHES,
    )
    fields = st.sampled_from(["none", "entry", "index", "size", "proof", "entry-cut"])

    @st.composite
    def mutated(draw: st.DrawFn) -> pb.LogAuthorization:
        out = pb.LogAuthorization()
        out.CopyFrom(real)
        what, pos = draw(fields), draw(POS)
        if what == "entry":
            out.entry = _flip(real.entry, pos, 1 << (pos % 8))
        elif what == "entry-cut":
            out.entry = real.entry[: pos % len(real.entry)]
        elif what == "index":
            out.index = draw(UINT64)
        elif what == "size":
            out.tree_size = draw(UINT64)
        elif what == "proof":
            del out.inclusion_proof[:]
            out.inclusion_proof.extend(draw(HASHES))
        return out

    return st.one_of(st.none(), random_auth, mutated(), mutated())


def _on_record_headers(kit: Kit, record: OnRecord, kind: str) -> st.SearchStrategy[Any]:
    """The header of a request on the record, with its signature corrupted (the request
    must not be valid) or replaced by garbage."""
    garbage = _garbage_signatures(kit)

    @st.composite
    def one(draw: st.DrawFn) -> pb.RequestHeader:
        out = header_to_pb(record.header)
        if draw(st.booleans()):
            how, pos = draw(_CORRUPTION)
            out.signed.CopyFrom(_corrupt(kit, record.signed, how, pos, record.header, kind))
        else:
            out.signed.CopyFrom(draw(garbage))
        return out

    return one()


def struct_search(kit: Kit, server: str) -> Strategy:
    authorizations = _authorizations(kit.search.authorization)
    hostile = st.builds(
        npb.SearchRequest,
        header=_headers(kit, ["DE", "FR", "IT"]),
        probe=_probes(kit),
        threshold_version=st.one_of(st.just(THRESHOLD_VERSION), TEXT),
        authorization=authorizations,
    )
    on_record_probe = probe_to_pb(
        EncryptedProbe(PARAMS, kit.search.ciphertext, MODEL, DIM, shared_keys("DE").key_id)
    )
    on_record = st.builds(
        npb.SearchRequest,
        header=_on_record_headers(kit, kit.search, "lookup"),
        probe=st.one_of(st.just(on_record_probe), st.just(on_record_probe), _probes(kit)),
        threshold_version=st.just(THRESHOLD_VERSION),
        authorization=authorizations,
    )
    return _serialized(st.one_of(hostile, on_record))


HANDLES = st.one_of(
    st.lists(st.binary(min_size=8, max_size=8), max_size=70),
    st.lists(SMALL_BYTES, max_size=70),
    st.integers(0, 5_000).map(lambda n: [b"\x00" * 8] * n),
)


def struct_hit_details(kit: Kit, server: str) -> Strategy:
    authorizations = _authorizations(kit.hits.authorization)
    hostile = st.builds(
        npb.HitDetailsRequest,
        header=_headers(kit, ["DE", "FR", "IT"]),
        handles=HANDLES,
        authorization=authorizations,
    )
    on_record = st.builds(
        npb.HitDetailsRequest,
        header=_on_record_headers(kit, kit.hits, "resolve"),
        handles=st.one_of(st.just(list(kit.hits.handles)), HANDLES),
        authorization=authorizations,
    )
    return _serialized(st.one_of(hostile, on_record))


def struct_add_checkpoint(kit: Kit, server: str) -> Strategy:
    log = kit.log_of("coordinator")
    witness = kit.fed.nodes["IT"].witness
    foreign = st.sampled_from(
        [NoteSigner.generate(COORDINATOR_ORIGIN), pki(kit.fed.tmp)["node-IT"].signer()]
    )
    notes = st.sampled_from(
        ["random", "text", "real", "flip", "cut", "twice", "forged", "foreign", "origin"]
    )
    roots = st.one_of(st.just(EMPTY_ROOT), st.binary(min_size=32, max_size=32))

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        old = draw(st.one_of(st.just(-1), UINT64))  # -1: the size IT witnessed, when sent
        proof = draw(st.one_of(st.none(), HASHES))  # None: the real consistency proof
        note, pos, size, root = draw(notes), draw(POS), draw(UINT64), draw(roots)
        junk, signer = draw(BYTES), draw(foreign)

        def build() -> bytes:
            real, witnessed, current = log.checkpoint(), witness.witnessed_size, log.size
            body = real[: real.index(b"\n\n") + 1]
            if note == "random":
                text = junk
            elif note == "text":
                text = b"fedmatch/coordinator\n%d\n" % size + junk
            elif note == "real":
                text = real
            elif note == "flip":
                text = _flip(real, pos, 1 << (pos % 8))
            elif note == "cut":
                text = real[: pos % len(real)]
            elif note == "twice":
                text = real + real[len(body) + 1 :]
            elif note == "forged":  # the coordinator's key, a checkpoint it never made
                forged = Checkpoint(COORDINATOR_ORIGIN, size, root).body()
                text = sign_note(forged, kit.coordinator_signer)
            elif note == "foreign":  # another key with the coordinator's name, or a node's
                text = sign_note(body, signer)
            else:  # the coordinator's key over another log's checkpoint
                other = Checkpoint("fedmatch/node/IT", current, root).body()
                text = sign_note(other, kit.coordinator_signer)
            hashes = proof
            if hashes is None:
                hashes = (
                    log.consistency_proof(witnessed, current) if 0 < witnessed < current else []
                )
            return apb.AddCheckpointRequest(
                old_size=witnessed if old == -1 else old, consistency_proof=hashes, checkpoint=text
            ).SerializeToString()

        return ("struct", build)

    return case()


# Well-formed unknown fields after an audit request (a deep request must still parse).
_EXTRA = st.sampled_from([b"", b"", b"", b"\x78\x01", b"\xa2\x06\x03abc", b"\x1a\x00"])


def _audit(kit: Kit, server: str, method: str, deep: bool) -> Strategy:
    """Audit requests. Struct ones have hostile queries and signatures that do not verify;
    deep ones carry the auditor's valid signature, all right but (sometimes) one thing, and
    numbers near the log's size when sent ("rel", delta) or anywhere ("abs", n)."""
    log = kit.log_of(server)
    number = st.one_of(
        st.tuples(st.just("rel"), st.integers(-3, 0)),
        st.tuples(st.just("rel"), st.integers(-3, 3)),
        st.tuples(st.just("abs"), st.integers(0, 5)),
        st.tuples(st.just("abs"), UINT64),
    )
    numbers = st.fixed_dictionaries({n: number for n in _NUMBERS})
    used_nonce = secrets.token_bytes(16)
    wrongs = (
        st.sampled_from(["none"] * 9 + ["auditor", "method", "late", "early", "nonce", "nonce16"])
        if deep
        else st.sampled_from(["random", "flip", "empty", "other-key", "junk"])
    )
    auditors = st.one_of(st.just(COORDINATOR_ORIGIN), TEXT)
    methods = st.one_of(st.sampled_from(_AUDIT_METHODS), TEXT)
    issued = st.one_of(INT64, st.integers(0, 2**62))
    junk = st.one_of(BYTES, st.integers(1_025, 5_000).map(lambda n: b"\x08" * n))

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        wrong, nums, extra = draw(wrongs), draw(numbers), draw(_EXTRA)
        fresh = draw(st.integers(0, 19)) == 0  # a checkpoint cosigned anew: costly
        name = kit.auditor.name if deep and wrong != "auditor" else draw(auditors)
        asked = method if deep and wrong != "method" else draw(methods)
        when = draw(issued) if not deep else None
        nonce = draw(SMALL_BYTES) if not deep or wrong == "nonce" else None
        body = draw(junk) if wrong == "junk" else b""

        def build() -> bytes:
            size = log.size
            now_ms = int(time.time() * 1000)
            query = apb.AuditQuery(
                auditor=name,
                issued_unix_ms=(
                    when
                    if when is not None
                    else now_ms + {"late": -301_000, "early": 301_000}.get(wrong, 0)
                ),
                nonce=(
                    nonce
                    if nonce is not None
                    else used_nonce
                    if wrong == "nonce16"
                    else secrets.token_bytes(16)
                ),
                method=asked,
                fresh=fresh,
                **{n: max(0, size + v) if mode == "rel" else v for n, (mode, v) in nums.items()},
            ).SerializeToString()
            if wrong == "junk":
                query = body
            signature = kit.auditor.sign(REQUEST_DOMAIN + query)
            if wrong == "flip":
                signature = _flip(signature, len(query), 1 << (len(query) % 8))
            elif wrong == "random":
                signature = secrets.token_bytes(64)
            elif wrong == "empty":
                signature = b""
            elif wrong == "other-key":
                signature = kit.coordinator_signer.sign(REQUEST_DOMAIN + query)
            return apb.AuditRequest(query=query, signature=signature).SerializeToString() + extra

        return ("deep" if deep else "struct", build)

    return case()


# -- deep inputs: correctly signed, hostile payload ---------------------------------------


def deep_lookup(kit: Kit, server: str) -> Strategy:
    return _ciphertexts(kit).map(lambda c: ("deep", lambda: _fr_lookup(kit, c).SerializeToString()))


def deep_resolve(kit: Kit, server: str) -> Strategy:
    pending = st.one_of(st.sampled_from(kit.pending), st.sampled_from(kit.pending), st.none())
    hits: st.SearchStrategy[list[cpb.HitRef]] = st.one_of(st.just([]), _hits(STATE))
    dates = st.one_of(st.just(APPLICATION_DATE), st.just(APPLICATION_DATE), DATE)

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        h0, refs, verified_by, date = draw(pending), draw(hits), draw(VERIFIED_BY), draw(dates)

        def build() -> bytes:
            h = h0 or header("FR")
            return cpb.ResolveRequest(
                header=header_to_pb(h, kit.sign("FR", h, "resolve")),
                application_date=date,
                hits=refs,
                verified_by=verified_by,
            ).SerializeToString()

        return ("deep", build)

    return case()


def deep_search(kit: Kit, server: str) -> Strategy:
    """FR's signed lookup, on the coordinator's record at IT, with everything right but one
    thing (most often the ciphertext): each refusal comes after the signature."""
    ciphertexts = _ciphertexts(kit)
    wrongs = st.sampled_from(
        ["ciphertext"] * 6
        + ["threshold", "model", "dimension", "params", "unknown-key", "de-key", "purpose"]
        + ["long-threshold", "long-model"]
    )

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        ciphertext, wrong = draw(ciphertexts), draw(wrongs)

        def build() -> bytes:
            key_id = {
                "unknown-key": secrets.token_hex(32),
                "de-key": shared_keys("DE").key_id,
            }.get(wrong, shared_keys("FR").key_id)
            h = header(
                "FR", Purpose.LAW_ENFORCEMENT if wrong == "purpose" else Purpose.ASYLUM_DUBLIN
            )
            signed = kit.sign("FR", h, "lookup", digest_hex(ciphertext))
            auth = kit.fed.authorize(_lookup_event(h, ciphertext, key_id, signed), ["IT"])
            probe = EncryptedProbe(
                "ckks-n4096-fuzz" if wrong == "params" else PARAMS,
                ciphertext,
                {"model": "other-model", "long-model": LONG}.get(wrong, MODEL),
                DIM + 1 if wrong == "dimension" else DIM,
                key_id,
            )
            return npb.SearchRequest(
                header=header_to_pb(h, signed),
                probe=probe_to_pb(probe),
                threshold_version={"threshold": "0", "long-threshold": LONG}.get(
                    wrong, THRESHOLD_VERSION
                ),
                authorization=authorization_to_pb(auth),
            ).SerializeToString()

        return ("deep", build)

    return case()


def deep_hit_details(kit: Kit, server: str) -> Strategy:
    """FR's signed resolve, with a hit_verified entry for exactly these (hostile) handles."""
    handles = st.one_of(
        st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=64),
        st.lists(SMALL_BYTES, min_size=1, max_size=64),
    )

    def build(refs: list[bytes]) -> bytes:
        h = header("FR")
        signed = kit.sign("FR", h, "resolve")
        auth = kit.fed.authorize(_hits_event(h, refs, signed), ["IT"])
        return npb.HitDetailsRequest(
            header=header_to_pb(h, signed), handles=refs, authorization=authorization_to_pb(auth)
        ).SerializeToString()

    return handles.map(lambda refs: ("deep", lambda: build(refs)))


# -- verification packets and rejections ------------------------------------------------


def _openings(states: st.SearchStrategy[str]) -> st.SearchStrategy[list[cpb.SealedOpening]]:
    """The sealed openings of a packet request: a few, or about as many as allowed."""
    opening = st.builds(cpb.SealedOpening, member_state=states, sealed=SEALED)
    small = st.builds(
        cpb.SealedOpening, member_state=st.sampled_from(["IT", "DE", "FR"]), sealed=SMALL_BYTES
    )
    return st.one_of(
        st.lists(opening, max_size=4),
        st.tuples(small, st.integers(MAX_OPENINGS - 1, MAX_OPENINGS + 2)).map(
            lambda t: [t[0]] * t[1]
        ),
    )


def struct_packets(kit: Kit, server: str) -> Strategy:
    if server != "coordinator":  # a node: as GetHitDetails, a packets_authorized entry
        authorizations = _authorizations(kit.packets.authorization)
        hostile = st.builds(
            npb.PacketsRequest,
            header=_headers(kit, ["DE", "FR", "IT"]),
            handles=HANDLES,
            authorization=authorizations,
            sealed_opening=SEALED,
            probe_image_sha256=IMAGE_DIGESTS,
        )
        on_record = st.builds(
            npb.PacketsRequest,
            header=_on_record_headers(kit, kit.packets, "packets"),
            handles=st.one_of(st.just(list(kit.packets.handles)), HANDLES),
            authorization=authorizations,
            sealed_opening=SEALED,
            probe_image_sha256=st.one_of(st.just(kit.packets.probe_image), IMAGE_DIGESTS),
        )
        return _serialized(st.one_of(hostile, on_record))
    hostile_request = _serialized(
        st.builds(
            cpb.VerificationPacketsRequest,
            header=_headers(kit, ["DE", "FR"]),
            hits=_hits(STATE),
            openings=_openings(STATE),
            probe_image_sha256=IMAGE_DIGESTS,
        )
    )
    hits = _hits(st.sampled_from(["IT", "FR"]))
    openings = _openings(st.sampled_from(["IT", "FR"]))
    images = st.one_of(st.just(""), HEX64)

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """A real header with a corrupted signature."""
        (how, pos), refs = draw(_CORRUPTION), draw(hits)
        sealed, image = draw(openings), draw(images)

        def build() -> bytes:
            h = header("DE")
            signed = kit.sign("DE", h, "packets", image)
            request = cpb.VerificationPacketsRequest(
                header=header_to_pb(h), hits=refs, openings=sealed, probe_image_sha256=image
            )
            request.header.signed.CopyFrom(_corrupt(kit, signed, how, pos, h, "packets"))
            return request.SerializeToString()

        return ("struct", build)

    return st.one_of(hostile_request, corrupted())


def deep_packets(kit: Kit, server: str) -> Strategy:
    """FR's signed packet requests. At the coordinator most name a lookup both nodes
    answered and well-formed hits at them, most often with the probe image of that lookup:
    relayed (each node refuses: no valid opening) until the lookup's three requests are
    used, and refused for a changed probe image; others name a lookup the nodes refused
    (its hits are malformed), no pending lookup, or are of a data-subject request. At a
    node, each comes with a packets_authorized entry for exactly its (hostile) handles at
    IT, for a query IT answered (it then needs the opening) or never saw. (Weights are
    drawn explicitly: hypothesis flattens and deduplicates the branches of st.one_of.)"""
    coordinator = server == "coordinator"
    which = st.sampled_from(["answered"] * 3 + ["fresh", "subject"] + ["refused"] * coordinator)
    index = st.integers(0, 15)
    # The probe image of the i-th lookup both nodes answered.
    own = tuple(image_digest(b"probe image %d" % n) for n in range(len(kit.answered)))
    handle = st.binary(min_size=8, max_size=8)
    good_hits = st.lists(
        st.builds(cpb.HitRef, member_state=st.sampled_from(["DE", "IT"]), handle=handle),
        min_size=1,
        max_size=6,
        unique_by=lambda r: (r.member_state, r.handle),
    )
    sealed = st.lists(
        st.builds(
            cpb.SealedOpening,
            member_state=st.sampled_from(["DE", "IT"]),
            sealed=st.binary(min_size=33, max_size=200),
        ),
        max_size=2,
        unique_by=lambda o: o.member_state,
    )
    choices: dict[str, st.SearchStrategy[Any]] = {
        # The image: the lookup's own (one per lookup, as a requester's), another, hostile.
        "image": st.sampled_from(["own"] * 6 + ["other", "hostile"]),
        "other": st.sampled_from(["", *own]),
        "hostile": IMAGE_DIGESTS,
    }
    payloads: dict[str, st.SearchStrategy[Any]]
    if coordinator:
        payloads = {
            "hits": st.sampled_from(["good"] * 6 + ["none", "hostile"]),
            "good": good_hits,
            "none": st.just([]),
            "hostile": _hits(STATE),
            "openings": st.sampled_from(["none", "sealed", "sealed", "hostile-openings"]),
            "sealed": sealed,
            "hostile-openings": _openings(st.sampled_from(["DE", "IT", "FR"])),
        }
    else:
        payloads = {
            "handles": st.sampled_from(["good"] * 6 + ["any", "hostile"]),
            "good": st.lists(handle, min_size=1, max_size=8, unique=True),
            "any": st.lists(handle, min_size=1, max_size=70),
            "hostile": st.lists(SMALL_BYTES, max_size=64),
        }

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        what, i, image_kind = draw(which), draw(index), draw(choices["image"])
        image = own[i % len(own)] if image_kind == "own" else draw(choices[image_kind])
        opened: Any  # the sealed openings (coordinator) or the sealed opening (node)
        if coordinator:
            refs = draw(payloads[draw(payloads["hits"])])
            openings = draw(payloads["openings"])
            opened = [] if openings == "none" else draw(payloads[openings])
        else:
            refs, opened = draw(payloads[draw(payloads["handles"])]), draw(SEALED)

        def build() -> bytes:
            if what == "answered":
                h = kit.answered[i % len(kit.answered)]
            elif what == "refused":
                h = kit.pending[i % len(kit.pending)]
            else:
                h = header(
                    "FR",
                    Purpose.DATA_SUBJECT_REQUEST if what == "subject" else Purpose.ASYLUM_DUBLIN,
                )
            # A statement names at most 256 characters: a longer image is refused before it.
            signed = kit.sign("FR", h, "packets", image if len(image) <= 256 else "")
            if coordinator:
                return cpb.VerificationPacketsRequest(
                    header=header_to_pb(h, signed),
                    hits=refs,
                    openings=opened,
                    probe_image_sha256=image,
                ).SerializeToString()
            auth = kit.fed.authorize(_packets_event(h, refs, signed), ["IT"])
            return npb.PacketsRequest(
                header=header_to_pb(h, signed),
                handles=refs,
                authorization=authorization_to_pb(auth),
                sealed_opening=opened,
                probe_image_sha256=image,
            ).SerializeToString()

        return ("deep", build)

    return case()


def _rejection(h: QueryHeader, verifier: str, signer: str, handle: bytes) -> dict[str, Any]:
    """The statement of a verifier's rejection of a hit at IT (no images), for ``h``."""
    return {
        "v": 2,
        "query_id": h.query_id,
        "requesting_state": h.requesting_state,
        "member_state": "IT",
        "handle": handle.hex(),
        "verdict": "reject",
        "reason": REJECT_REASONS[0],
        "probe_sex": "",
        "probe_image": "",
        "candidate_image": "",
        "verifier": verifier,
        "issued_ms": int(time.time() * 1000),
        "nonce": secrets.token_hex(16),
        "signer": signer,
    }


def _verdict_signer(kit: Kit, role: str, state: str, person: str) -> tuple[NoteSigner, bytes, str]:
    """The key, chain and certificate name a verdict is signed with: a verifier's, or an
    operator workstation's (not a verifier)."""
    if role == "operator":
        return _signer(kit.fed, state).key, kit.chains[f"operator-{state}"], f"operator-{state}"
    signer, name = _expert(kit.fed, state, person)
    return signer.key, signer.chain_pem, name


def _rejection_pb(kit: Kit, h: QueryHeader, handle: bytes) -> pb.HitVerdict:
    """Anna's (a DE verifier's) real rejection of a hit at IT for ``h``."""
    key, chain, name = _verdict_signer(kit, "verifier", "DE", "anna")
    statement = canonical_json(_rejection(h, name, key_id(key.public_key_bytes()), handle))
    return pb.HitVerdict(
        statement=statement, signature=key.sign(VERDICT_DOMAIN + statement), signer_chain=chain
    )


VERDICT_CORRUPTIONS = (
    "flip-statement",
    "truncate-statement",
    "flip-signature",
    "short-signature",
    "no-signature",
    "truncate-chain",
    "flip-chain",
    "foreign-chain",
    "other-verifier",
    "other-signer",
    "long-chain",
)


def _corrupt_verdict(kit: Kit, h: QueryHeader, how: str, pos: int) -> pb.HitVerdict:
    """A real rejection for ``h``, made wrong in one way: ``how``."""
    real = _rejection_pb(kit, h, encode_handle(0, 1 + pos % 20))
    statement, signature, chain = real.statement, real.signature, real.signer_chain
    if how == "flip-statement":
        statement = _flip(statement, pos, 1 << (pos % 8))
    elif how == "truncate-statement":
        statement = statement[: pos % len(statement)]
    elif how == "flip-signature":
        signature = _flip(signature, pos, 1 << (pos % 8))
    elif how == "short-signature":
        signature = signature[: pos % 64]
    elif how == "no-signature":
        signature = b""
    elif how == "truncate-chain":  # within the leaf certificate (the leaf alone is valid)
        chain = chain[: pos % _leaf_end(chain)]
    elif how == "flip-chain":
        chain = _flip_chain(chain, pos)
    elif how == "foreign-chain":  # not a verifier, or a verifier of another state
        names = ("operator-DE", "node-IT", AUDITOR, "coordinator", "verifier-anna-FR")
        chain = kit.chains[names[pos % len(names)]]
    elif how == "other-verifier":  # ben's certificate, for a verdict naming anna
        chain = _expert(kit.fed, "DE", "ben")[0].chain_pem
    elif how == "other-signer":  # ben's key, anna's statement and certificate
        signature = _expert(kit.fed, "DE", "ben")[0].key.sign(VERDICT_DOMAIN + statement)
    else:
        chain += b"\n" * (MAX_CHAIN_BYTES + 1 - len(chain))
    return pb.HitVerdict(statement=statement, signature=signature, signer_chain=chain)


def struct_report(kit: Kit, server: str) -> Strategy:
    real = st.sampled_from(sorted(kit.chains.values()))
    chains = st.one_of(real, BYTES, st.just(b"-" * (MAX_CHAIN_BYTES + 1)))
    signatures = st.one_of(st.binary(min_size=64, max_size=64), SMALL_BYTES)
    statements = st.one_of(
        st.sampled_from(NASTY_JSON), BYTES, st.just(b"{}" + b" " * MAX_VERDICT_BYTES)
    )
    garbage = st.builds(
        pb.HitVerdict, statement=statements, signature=signatures, signer_chain=chains
    )
    small = st.builds(pb.HitVerdict, statement=SMALL_BYTES, signature=signatures, signer_chain=real)
    verdicts = st.one_of(
        st.lists(garbage, max_size=6),
        st.tuples(small, st.integers(MAX_VERDICTS, MAX_VERDICTS + 2)).map(lambda t: [t[0]] * t[1]),
    )
    hostile = _serialized(
        st.builds(
            npb.ReportRejectionsRequest, header=_headers(kit, ["DE", "FR", "IT"]), verdicts=verdicts
        )
    )

    @st.composite
    def corrupted(draw: st.DrawFn) -> Case:
        """Real rejections by a DE verifier for a real header, one made wrong."""
        how, pos, n = draw(st.sampled_from(VERDICT_CORRUPTIONS)), draw(POS), draw(st.integers(0, 3))

        def build() -> bytes:
            h = header("DE")
            out = [_rejection_pb(kit, h, encode_handle(1, i)) for i in range(n)]
            out.insert(pos % (n + 1), _corrupt_verdict(kit, h, how, pos))
            return npb.ReportRejectionsRequest(
                header=header_to_pb(h), verdicts=out
            ).SerializeToString()

        return ("struct", build)

    return st.one_of(hostile, corrupted())


_FUTURE = "<ten minutes from now>"  # an issued_ms, computed when the input is sent
_HOSTILE_VERDICT: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([1, 3, "2", 2.0, True, None]),
    "query_id": st.one_of(HEX32, HEX32.map(str.upper), TEXT),
    "requesting_state": STATE,
    "member_state": STATE,
    "handle": st.one_of(
        st.binary(max_size=12).map(bytes.hex),
        st.binary(min_size=8, max_size=8).map(lambda b: b.hex().upper()),
        TEXT,
    ),
    "verdict": st.one_of(st.sampled_from(["confirm", "REJECT", ""]), TEXT),
    "reason": st.one_of(st.sampled_from([*REJECT_REASONS, ""]), TEXT),
    "probe_sex": st.one_of(st.sampled_from(["F", "M", "X", "f", "U"]), TEXT),
    "probe_image": IMAGE_DIGESTS,
    "candidate_image": IMAGE_DIGESTS,
    "verifier": st.one_of(st.sampled_from(VERIFIERS), TEXT),
    "issued_ms": st.one_of(
        st.just(_FUTURE), INT64, st.sampled_from([0, 2**63, 2**64, "1", 1.5, True, None])
    ),
    "nonce": st.one_of(HEX32.map(str.upper), TEXT),
    "signer": st.one_of(st.text("0123456789abcdef", min_size=16, max_size=16), TEXT),
}
# Who signs a verdict besides a verifier of the requesting state (None): a verifier of
# another state, one who is meant to be misused, an operator.
_OTHER_SIGNERS = [
    ("verifier", "DE", "carl"),
    ("verifier", "FR", "anna"),
    ("verifier", "IT", "ben"),
    ("operator", "DE", ""),
    ("operator", "FR", ""),
]
_SHAPES = ["canonical"] * 16 + ["extra", "missing", "spaced", "long"]


def deep_report(kit: Kit, server: str) -> Strategy:
    """Rejections correctly signed (most by verifiers of the requesting state, as the
    coordinator relays them) that state hostile things, in statements that are canonical or
    not: for a query of DE that IT never answered, or for one of FR it did (kit.answered: no
    packet was ever released for it)."""
    signers = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(_OTHER_SIGNERS))
    spec = st.tuples(
        signers,
        st.sampled_from(["anna", "ben"]),
        st.one_of(st.just({}), _hostile({}, _HOSTILE_VERDICT)),
        st.sampled_from(_SHAPES),
        st.binary(min_size=8, max_size=8),
    )
    # How many verdicts (weights drawn explicitly, as in deep_packets): mostly one.
    counts = st.sampled_from(["one"] * 14 + ["few"] * 4 + ["none", "many"])
    specs = {
        "one": st.tuples(spec).map(list),
        "few": st.lists(spec, min_size=2, max_size=4),
        "none": st.just([]),
        "many": st.tuples(spec, st.integers(MAX_VERDICTS, MAX_VERDICTS + 1)).map(
            lambda t: [t[0]] * t[1]
        ),
    }
    queries = st.one_of(st.none(), st.sampled_from(kit.answered))

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        h0, drawn = draw(queries), draw(specs[draw(counts)])

        def build() -> bytes:
            h = h0 or header("DE")
            out = []
            for who, person, hostile, shape, handle in drawn:
                role, state, name = who or ("verifier", h.requesting_state, person)
                key, chain, verifier = _verdict_signer(kit, role, state, name)
                fields = _rejection(h, verifier, key_id(key.public_key_bytes()), handle)
                fields |= hostile
                if fields["issued_ms"] == _FUTURE:
                    fields["issued_ms"] = int(time.time() * 1000) + 600_000
                if shape == "extra":
                    fields["approved"] = True
                elif shape == "missing":
                    del fields["nonce"]
                statement = canonical_json(fields)
                if shape == "spaced":
                    statement = json.dumps(fields, sort_keys=True).encode()
                elif shape == "long":
                    statement += b" " * MAX_VERDICT_BYTES
                signature = key.sign(VERDICT_DOMAIN + statement)
                out.append(
                    pb.HitVerdict(statement=statement, signature=signature, signer_chain=chain)
                )
            return npb.ReportRejectionsRequest(
                header=header_to_pb(h), verdicts=out
            ).SerializeToString()

        return ("deep", build)

    return case()


_NOTICE_KINDS = (
    "record_marked", "record_unmarked", "record_erased", "correction_request", "erasure_request",
)  # fmt: skip
NOTICE_KIND = st.one_of(st.sampled_from(_NOTICE_KINDS), TEXT)
MARK_KIND = st.one_of(st.sampled_from(["", "protection_granted", "residence_document"]), TEXT)
_LIFECYCLE_HEADERS = ["IT", "DE"]


def struct_mark(kit: Kit, server: str) -> Strategy:
    references = st.one_of(st.sampled_from(["IT-SYN-00000001", "IT-SYN-00000002", "IT-X"]), TEXT)
    return _officer_signed(
        kit,
        "MarkRecord",
        st.builds(
            npb.MarkRecordRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            reference=references,
            marked=st.booleans(),
            mark_kind=MARK_KIND,
        ),
    )


_SYN_REFERENCES = st.one_of(st.sampled_from(["IT-SYN-00000001", "IT-SYN-00000002", "IT-X"]), TEXT)
_CLEAR = st.lists(
    st.one_of(
        st.sampled_from(
            ["responsible", "transferred_on", "removed_on", "left_territory_on", "relocation"]
        ),
        TEXT,
    ),
    max_size=3,
)


def struct_status(kit: Kit, server: str) -> Strategy:
    optional_date = st.one_of(st.just(""), DATE)
    optional_state = st.one_of(st.just(""), STATE)
    return _officer_signed(
        kit,
        "SetRecordStatus",
        st.builds(
            npb.SetRecordStatusRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            reference=_SYN_REFERENCES,
            responsible_state=optional_state,
            responsible_basis=st.one_of(st.just("AMMR Art. 33(1)"), TEXT),
            transferred_on=optional_date,
            removed_on=optional_date,
            left_territory_on=optional_date,
            relocated_to=optional_state,
            relocated_on=optional_date,
            clear=_CLEAR,
        ),
    )


def struct_link_own_hit(kit: Kit, server: str) -> Strategy:
    return _officer_signed(
        kit,
        "LinkOwnHit",
        st.builds(
            npb.LinkOwnHitRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            reference=_SYN_REFERENCES,
            other_state=STATE,
            other_digest=st.one_of(HEX64, HEX64.map(str.upper), TEXT),
            query_id=st.one_of(HEX32, TEXT),
        ),
    )


def struct_erase(kit: Kit, server: str) -> Strategy:
    # No reference of the register: an erasure would shrink it (see RPCS). Enrol's fuzzing
    # may have enrolled records under hostile references too (an authorized operator may
    # erase those for real): every reference the register holds is left out.
    store = kit.fed.nodes["IT"].store

    def unknown(reference: str) -> bool:
        try:
            store.find(reference)
        except NotFound:
            return True
        return False

    references = st.one_of(st.just("IT-FUZZ-NONE"), TEXT).filter(
        lambda r: "SYN" not in r and unknown(r)
    )
    reasons = st.one_of(
        st.sampled_from(["citizenship_acquired", "erasure_request", "retention_expired", ""]),
        TEXT,
    )
    return _officer_signed(
        kit,
        "EraseRecord",
        st.builds(
            npb.EraseRecordRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            reference=references,
            reason=reasons,
        ),
    )


def struct_route(kit: Kit, server: str) -> Strategy:
    return _officer_signed(
        kit,
        "RouteRightsRequest",
        st.builds(
            npb.RouteRightsRequestRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            kind=NOTICE_KIND,
            to_state=STATE,
            reference=st.one_of(st.just("DE-SYN-00000001"), TEXT),
            query_id=st.one_of(st.just(""), HEX32, TEXT),
        ),
    )


def struct_inbox(kit: Kit, server: str) -> Strategy:
    return _officer_signed(
        kit,
        "ListInbox",
        st.builds(
            npb.ListInboxRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            open_only=st.booleans(),
        ),
    )


def struct_ack(kit: Kit, server: str) -> Strategy:
    return _officer_signed(
        kit,
        "AcknowledgeInbox",
        st.builds(
            npb.AcknowledgeInboxRequest,
            header=_headers(kit, _LIFECYCLE_HEADERS),
            item_id=UINT64,
        ),
    )


_HOSTILE_NOTICE: dict[str, st.SearchStrategy[Any]] = {
    "notice_id": st.one_of(TEXT, HEX32.map(str.upper)),
    "kind": NOTICE_KIND,
    "from_state": STATE,
    "to_state": STATE,
    "reference": TEXT,
    "reference_digest": st.one_of(TEXT, HEX64.map(str.upper)),
    "query_id": TEXT,
    "case_reference": TEXT,
    "mark_kind": MARK_KIND,
    "hit_record_digest": st.one_of(TEXT, HEX64.map(str.upper)),
}


def _notices(senders: Sequence[str], receivers: Sequence[str]) -> st.SearchStrategy[Any]:
    """No notice, or a well-formed one (a fresh id) with a few hostile fields (often none)."""

    @st.composite
    def one(draw: st.DrawFn) -> pb.Notice:
        kind = draw(st.sampled_from(_NOTICE_KINDS))
        rights = kind.endswith("_request")
        valid = {
            "notice_id": draw(HEX32),
            "kind": kind,
            "from_state": draw(st.sampled_from(senders)),
            "to_state": draw(st.sampled_from(receivers)),
            "reference": "IT-SYN-00000001" if rights else "",
            "reference_digest": "" if rights else draw(HEX64),
            "query_id": draw(HEX32),
            "case_reference": "CASE-FUZZ",
            "mark_kind": "residence_document" if "marked" in kind else "",
            "hit_record_digest": draw(st.sampled_from(["", "0" * 64])) if "marked" in kind else "",
        }
        return pb.Notice(**draw(_hostile(valid, _HOSTILE_NOTICE)))

    return st.one_of(st.none(), one(), one(), one())


def struct_deliver(kit: Kit, server: str) -> Strategy:
    return _serialized(st.builds(npb.DeliverNoticeRequest, notice=_notices(["DE", "FR"], ["IT"])))


def struct_relay(kit: Kit, server: str) -> Strategy:
    return _serialized(
        st.builds(cpb.RelayNoticeRequest, notice=_notices(["IT"], ["DE", "FR", "ES", "IT"]))
    )


STRUCT: dict[str, Callable[[Kit, str], Strategy]] = {
    "GetFederation": struct_federation,
    "RegisterKeys": struct_register_keys,
    "Lookup": struct_lookup,
    "Resolve": struct_resolve,
    "AnswerDataSubject": struct_answer,
    "ConfirmDecision": struct_confirm,
    "Enroll": struct_enroll,
    "Search": struct_search,
    "GetHitDetails": struct_hit_details,
    "GetVerificationPackets": struct_packets,
    "ReportRejections": struct_report,
    "GetInfo": struct_info,
    "AddCheckpoint": struct_add_checkpoint,
    "Check": struct_health,
    "MarkRecord": struct_mark,
    "SetRecordStatus": struct_status,
    "LinkOwnHit": struct_link_own_hit,
    "EraseRecord": struct_erase,
    "RouteRightsRequest": struct_route,
    "ListInbox": struct_inbox,
    "AcknowledgeInbox": struct_ack,
    "DeliverNotice": struct_deliver,
    "RelayNotice": struct_relay,
    **{
        m: lambda kit, server, m=m: _audit(kit, server, m, deep=False)  # type: ignore[misc]
        for m in _AUDIT_METHODS
    },
}
DEEP_INPUTS: dict[str, Callable[[Kit, str], Strategy]] = {
    "Lookup": deep_lookup,
    "Resolve": deep_resolve,
    "Search": deep_search,
    "GetHitDetails": deep_hit_details,
    "GetVerificationPackets": deep_packets,
    "ReportRejections": deep_report,
    **{
        m: lambda kit, server, m=m: _audit(kit, server, m, deep=True)  # type: ignore[misc]
        for m in _AUDIT_METHODS
    },
}


def _explicit(kit: Kit, method: str) -> list[Case]:
    """Inputs too large to generate by the thousand: a whole real key bundle (~36 MB) with
    its secret key, under another name, and FR's claimed by DE; a probe and a photo one byte
    over their bounds. And requests too unlikely to generate: enrolments valid but for a
    control character in a header field the audit log records, or for a 20,000-character
    model id; lookups with such a model id."""
    de = header_to_pb(header("DE"))
    if method == "RegisterKeys":
        he = kit.he
        full = pb.HEKeyBundle(
            he_param_set=PARAMS,
            parms=he.parms,
            public_key=he.public_key,
            galois_keys=he.galois_keys,
            relin_keys=he.relin_keys,
        )
        secret, renamed = pb.HEKeyBundle(), pb.HEKeyBundle()
        secret.CopyFrom(full)
        secret.secret_key = he.secret_key
        renamed.CopyFrom(full)
        renamed.he_param_set = PARAMS + "x"
        return [
            ("struct", pb.RegisterKeysRequest(header=de, key_bundle=b).SerializeToString())
            for b in (secret, full, renamed)
        ]
    oversized = pb.EncryptedProbe(
        he_param_set=PARAMS,
        ciphertext=b"\x00" * (MAX_PROBE_BYTES + 1),
        model_id=MODEL,
        dimension=DIM,
        key_id=shared_keys("DE").key_id,
    )
    if method == "Lookup":
        long_model = pb.EncryptedProbe()
        long_model.CopyFrom(oversized)
        long_model.ciphertext, long_model.model_id = b"\x00", LONG
        return [
            ("struct", cpb.LookupRequest(header=de, probe=probe).SerializeToString())
            for probe in (oversized, long_model)
        ]
    if method == "Search":
        request = npb.SearchRequest(
            header=de, probe=oversized, authorization=kit.search.authorization
        )
        return [("struct", request.SerializeToString())]
    if method == "Enroll":
        photo = npb.Photo(data=b"\xff" * (MAX_PHOTO_BYTES + 1), name="big.jpg", pick=-1)
        cases = [npb.EnrollRequest(header=header_to_pb(header("IT")), photo=photo)]
        # Valid enrolments but for a non-printable character in the legal basis or the case
        # reference (which QueryHeader accepts and the audit log does not), or for a model
        # id too long to be quoted in a status message.
        wrongs = [("legal_basis", "Art.\n27"), ("case_reference", "CASE\x001"), ("model", LONG)]
        for name, value in wrongs:
            h = header_to_pb(header("IT"))
            if name != "model":
                setattr(h, name, value)
            cases.append(
                npb.EnrollRequest(
                    header=h,
                    record=npb.RecordMetadata(
                        reference=f"IT-EXPLICIT-{secrets.token_hex(4)}",
                        category=pb.CATEGORY_APPLICANT,
                        event_date="2026-05-01",
                        event_place="Lampedusa",
                        capture_date="2026-05-01",
                        birth_date="1990-05-17",
                    ),
                    template=npb.Template(
                        model_id=value if name == "model" else MODEL, values=kit.templates[1]
                    ),
                )
            )
        # Signed by IT's officer (when sent): each reaches the check it is made for.
        return [("struct", _signed_body(kit, c, "Enroll")) for c in cases]
    return []


# -- seeds of the mutants: plausible requests of each RPC --------------------------------


def _seed(kit: Kit, rpc: Rpc) -> bytes:
    """A plausible request of ``rpc``; any signature in it is garbage, so that no mutant of
    a signed RPC can be valid."""
    method = rpc.name.split("@")[0]
    de = header_to_pb(header("DE"))
    de.signed.CopyFrom(
        pb.RequestSignature(
            statement=b'{"v":1}', signature=b"\x07" * 64, signer_chain=kit.chains["operator-DE"]
        )
    )
    probe = pb.EncryptedProbe(
        he_param_set=PARAMS,
        ciphertext=kit.he.ciphertext[:200],
        model_id=MODEL,
        dimension=DIM,
        key_id=shared_keys("DE").key_id,
    )
    bundle = pb.HEKeyBundle(
        he_param_set=PARAMS, parms=kit.he.parms, public_key=b"\x01" * 64, galois_keys=b"\x02" * 64
    )
    hit = cpb.HitRef(member_state="IT", handle=encode_handle(0, 1))
    verdict = _rejection_pb(kit, header("DE"), encode_handle(0, 1))
    verdict.signature = b"\x07" * 64
    it = header_to_pb(header("IT"))
    record = npb.RecordMetadata(
        reference="IT-SEED-1",
        category=pb.CATEGORY_APPLICANT,
        event_date="2026-05-01",
        event_place="Lampedusa",
        capture_date="2026-05-01",
        birth_date="1990-05-17",
        sex=pb.SEX_MALE,
        operator_id="op-1",
    )
    log = kit.log_of("coordinator")
    query = apb.AuditQuery(
        auditor=kit.auditor.name,
        issued_unix_ms=int(time.time() * 1000),
        nonce=b"\x05" * 16,
        method=method,
        end=3,
        index=1,
        tree_size=3,
        size1=1,
        size2=3,
    )
    seeds: dict[str, Callable[[], Message]] = {
        "GetFederation": lambda: cpb.FederationRequest(header=de),
        "RegisterKeys": lambda: pb.RegisterKeysRequest(header=de, key_bundle=bundle),
        "Lookup": lambda: cpb.LookupRequest(header=de, probe=probe),
        "Resolve": lambda: cpb.ResolveRequest(
            header=de, application_date=APPLICATION_DATE, hits=[hit]
        ),
        "AnswerDataSubject": lambda: cpb.DataSubjectAnswerRequest(
            header=header_to_pb(header("DE", Purpose.DATA_SUBJECT_REQUEST)), hits=[hit]
        ),
        "ConfirmDecision": lambda: cpb.ConfirmDecisionRequest(
            header=de, proposal_digest="0" * 64, action=cpb.CONFIRM_ACTION_ACCEPT
        ),
        "Enroll": lambda: npb.EnrollRequest(
            header=header_to_pb(header("IT")),
            record=record,
            template=npb.Template(model_id=MODEL, values=kit.templates[0]),
        ),
        "Search": lambda: npb.SearchRequest(
            header=de,
            probe=probe,
            threshold_version=THRESHOLD_VERSION,
            authorization=kit.search.authorization,
        ),
        "GetHitDetails": lambda: npb.HitDetailsRequest(
            header=de, handles=list(kit.hits.handles), authorization=kit.hits.authorization
        ),
        "GetVerificationPackets": lambda: (
            cpb.VerificationPacketsRequest(
                header=de,
                hits=[hit],
                openings=[cpb.SealedOpening(member_state="IT", sealed=b"\x03" * 96)],
                probe_image_sha256=kit.packets.probe_image,
            )
            if rpc.server == "coordinator"
            else npb.PacketsRequest(
                header=de,
                handles=list(kit.packets.handles),
                authorization=kit.packets.authorization,
                sealed_opening=b"\x03" * 96,
                probe_image_sha256=kit.packets.probe_image,
            )
        ),
        "ReportRejections": lambda: npb.ReportRejectionsRequest(
            header=de, verdicts=[verdict, verdict]
        ),
        "GetInfo": lambda: npb.InfoRequest(header=de),
        "AddCheckpoint": lambda: apb.AddCheckpointRequest(
            old_size=log.size, checkpoint=log.checkpoint()
        ),
        "Check": lambda: hpb.HealthCheckRequest(service=""),
        "MarkRecord": lambda: npb.MarkRecordRequest(
            header=it, reference="IT-SYN-00000001", marked=True, mark_kind="protection_granted"
        ),
        "SetRecordStatus": lambda: npb.SetRecordStatusRequest(
            header=it,
            reference="IT-SYN-00000001",
            responsible_state="IT",
            responsible_basis="AMMR Art. 33(1)",
        ),
        "LinkOwnHit": lambda: npb.LinkOwnHitRequest(
            header=it,
            reference="IT-SYN-00000001",
            other_state="DE",
            other_digest="0" * 64,
            query_id="0" * 32,
        ),
        "EraseRecord": lambda: npb.EraseRecordRequest(
            header=it, reference="IT-FUZZ-NONE", reason="citizenship_acquired"
        ),
        "RouteRightsRequest": lambda: npb.RouteRightsRequestRequest(
            header=it, kind="erasure_request", to_state="DE", reference="DE-SYN-00000001"
        ),
        "ListInbox": lambda: npb.ListInboxRequest(header=it),
        "AcknowledgeInbox": lambda: npb.AcknowledgeInboxRequest(header=it, item_id=1),
        "DeliverNotice": lambda: npb.DeliverNoticeRequest(
            notice=pb.Notice(
                notice_id="d" * 32,
                kind="correction_request",
                from_state="DE",
                to_state="IT",
                reference="IT-SYN-00000001",
                case_reference="DE-CASE-1",
            )
        ),
        "RelayNotice": lambda: cpb.RelayNoticeRequest(
            notice=pb.Notice(
                notice_id="e" * 32,
                kind="record_marked",
                from_state="IT",
                to_state="DE",
                reference_digest="f" * 64,
                query_id="a" * 32,
            )
        ),
    }
    audit = lambda: apb.AuditRequest(query=query.SerializeToString(), signature=b"\x09" * 64)  # noqa: E731
    return seeds.get(method, audit)().SerializeToString()


# -- sending and judging ----------------------------------------------------------------


@dataclass
class Tally:
    rpc: Rpc
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (kind, problem) -> (count, the smallest such input, its status details)
    problems: dict[tuple[str, str], tuple[int, bytes, str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, kind: str = "", code: str = "") -> int:
        return sum(n for (k, c), n in self.counts.items() if kind in ("", k) and code in ("", c))

    def add(
        self, kind: str, code: grpc.StatusCode, problem: str | None, body: bytes, details: str
    ) -> None:
        self.counts[kind, code.name] += 1
        if problem is not None:
            n, smallest, d = self.problems.get((kind, problem), (0, body, details))
            if len(body) < len(smallest):
                smallest, d = body, details
            self.problems[kind, problem] = (n + 1, smallest, d)

    def report(self, seconds: float) -> str:
        rpc = self.rpc
        lines = [f"[fuzz] {rpc.name} as {rpc.caller}: {self.total:,} inputs in {seconds:.1f} s"]
        kinds = [k for k in ("raw", "mutant", "struct", "deep") if self.of(k)]
        for kind in [*kinds, ""]:
            codes: Counter[str] = Counter()
            for (k, c), n in self.counts.items():
                if kind in ("", k):
                    codes[c] += n
            histogram = ", ".join(f"{c} {n:,}" for c, n in codes.most_common())
            lines.append(f"    {kind or 'all':<7}{self.of(kind):>7,}  {histogram}")
        for (kind, problem), (n, body, details) in sorted(self.problems.items()):
            lines.append(
                f"    PROBLEM {kind} x{n}: {problem}; details {details[:160]!r}; smallest "
                f"input ({len(body)} bytes): {body[:200].hex()}"
            )
        return "\n".join(lines)


def _parses(request: type[Message], body: bytes) -> bool:
    try:
        request.FromString(body)
    except DecodeError:
        return False
    return True


def _check_lookup(response: bytes) -> str | None:
    """A deep lookup succeeds only with every node refusing the ciphertext (or FR's rate)."""
    nodes = cpb.LookupResponse.FromString(response).nodes
    if len(nodes) != 2 or any(
        n.outcome != cpb.NODE_OUTCOME_REFUSED
        or not n.detail.startswith(("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"))
        for n in nodes
    ):
        outcomes = "; ".join(f"{n.member_state} {n.outcome} {n.detail[:100]}" for n in nodes)
        return f"a malformed ciphertext was not refused by every node: {outcomes}"
    return None


def _check_packets(body: bytes, response: bytes) -> str | None:
    """A deep packet request is relayed to the nodes of its hits only, and each refuses it
    (no input carries a valid opening): no packet comes back."""
    asked = {h.member_state for h in cpb.VerificationPacketsRequest.FromString(body).hits}
    nodes = cpb.VerificationPacketsResponse.FromString(response).nodes
    if sorted(n.member_state for n in nodes) != sorted(asked) or any(
        n.packets
        or n.outcome != "refused"
        or not n.detail.startswith(("PERMISSION_DENIED", "INVALID_ARGUMENT"))
        for n in nodes
    ):
        outcomes = "; ".join(
            f"{n.member_state} {n.outcome} {len(n.packets)} packets {n.detail[:100]}" for n in nodes
        )
        return f"a packet request without an opening was not refused by its nodes: {outcomes}"
    return None


def _verdict(
    rpc: Rpc, kind: str, body: bytes, code: grpc.StatusCode, details: str, response: bytes | None
) -> str | None:
    """What is wrong with this outcome, or None."""
    if "Traceback" in details:
        return "status details carry a traceback"
    if not _parses(rpc.request, body):
        return None if code == C.INTERNAL else f"a body that does not parse got {code.name}"
    if code == C.OK:
        if kind not in rpc.ok:
            return "succeeded"
        assert response is not None
        if not _parses(rpc.response, response):
            return "response does not parse"
        if rpc.name == "Lookup@coordinator":
            return _check_lookup(response)
        if rpc.name == "GetVerificationPackets@coordinator":
            return _check_packets(body, response)
        return None
    if code == C.INTERNAL:
        return "INTERNAL for a body that parses (an unexpected exception in the handler)"
    if code == C.DEADLINE_EXCEEDED:
        return "hang (deadline exceeded)"
    if code == RE and "metadata size exceeds" in details:
        # grpcio's client-side answer to a status message over 16 KiB: a refusal quoting
        # an unbounded caller-supplied value.
        return "status message too long (it quotes a caller-supplied value)"
    if code not in rpc.expected:
        return f"unexpected {code.name}"
    return None


def _send(kit: Kit, tally: Tally, cases: Sequence[Case]) -> None:
    """Each case as a real RPC, all in flight at once; every outcome judged and counted."""
    rpc = tally.rpc
    bodies = [body() if callable(body) else body for _, body in cases]
    futures = []
    for (kind, _), body in zip(cases, bodies, strict=True):
        caller = rpc.deep_caller if kind == "deep" and rpc.deep_caller else rpc.caller
        futures.append(kit.call(rpc.server, caller, rpc.path).future(body, timeout=TIMEOUT))
    for (kind, _), body, future in zip(cases, bodies, futures, strict=True):
        response: bytes | None = None
        try:
            response = future.result()
            code, details = C.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        problem = _verdict(rpc, kind, body, code, details, response)
        tally.add(kind, code, problem, body, details)


def _run(kit: Kit, tally: Tally, strategy: Strategy, inputs: int, batch: int) -> None:
    """Send ``inputs`` generated inputs (rounded up to whole batches) as real RPCs."""
    if inputs <= 0:
        return  # a small FEDMATCH_FUZZ_INPUTS already spent on raw and deep inputs

    @settings(
        max_examples=-(-inputs // batch),
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=batch, max_size=batch))
    def send(cases: list[Case]) -> None:
        _send(kit, tally, cases)

    send()


@pytest.mark.parametrize("name", list(RPCS))
def test_fuzz_rpc(kit: Kit, name: str) -> None:
    rpc = RPCS[name]
    method = name.split("@")[0]
    tally = Tally(rpc)
    started = time.perf_counter()
    registered = kit.fed.nodes["IT"].record_count()
    seed = _seed(kit, rpc)
    raw = st.one_of(
        st.binary(max_size=2048).map(lambda b: ("raw", b)),
        st.binary(max_size=64).map(lambda b: ("raw", b)),
        _mutants(seed).map(lambda b: ("mutant", b)),
    )
    _run(kit, tally, raw, RAW, BATCH)
    if name in DEEP:
        deep = DEEP_INPUTS[method](kit, rpc.server)
        _run(kit, tally, deep, DEEP[name], DEEP_BATCH.get(name, 10))
    _send(kit, tally, _explicit(kit, method))
    _run(kit, tally, STRUCT[method](kit, rpc.server), MIN_INPUTS - tally.total, BATCH)
    report = tally.report(time.perf_counter() - started)
    print(f"\n{report}")
    grown, answered = kit.fed.nodes["IT"].record_count() - registered, tally.of(code="OK")
    failures = [
        f"only {tally.total:,} inputs" if tally.total < MIN_INPUTS else "",
        f"only {tally.of('deep')} deep inputs" if tally.of("deep") < DEEP.get(name, 0) else "",
        "unexpected outcomes (the PROBLEM lines)" if tally.problems else "",
        "a fuzz input made a node do homomorphic work" if kit.completed_searches() else "",
        # A refused enrolment enrols nothing: the register grew by the enrolments answered OK.
        f"IT's register grew by {grown} records; {answered} enrolments were answered OK"
        if grown != (answered if method == "Enroll" else 0)
        else "",
    ]
    assert not any(failures), "; ".join(f for f in failures if f) + "\n" + report


def test_every_rpc_is_fuzzed() -> None:
    """A method the servers authorize (their rules list every one) but nobody fuzzes would
    be a gap: each unary method of the rules has an entry in RPCS, at each kind of server."""
    rules = {"coordinator": COORDINATOR_RULES, "IT": NODE_RULES}
    served = {(server, m) for server, r in rules.items() for m in r if not m.endswith("/Watch")}
    assert served == {(rpc.server, rpc.path) for rpc in RPCS.values()}


def test_honest_requests_after_the_fuzzing(kit: Kit) -> None:
    """Every server still answers honest requests: two enrolments at IT, a lookup of DE that
    finds both, their verification packets, its resolve (hit details from IT for the hit
    DE's experts confirmed, the other one's rejection reported to IT), node info, audit
    reads and health."""
    fed = kit.fed
    rng = np.random.default_rng(11)
    template = rng.normal(size=DIM)
    template /= np.linalg.norm(template)
    near = template + rng.normal(size=DIM) * 0.02  # the same person, another capture
    near /= np.linalg.norm(near)
    enroll_call = kit.call("IT", "operator-IT", "/fedmatch.rpc.v1.NodeService/Enroll")
    for values in (template, near):
        enroll = npb.EnrollRequest(
            header=header_to_pb(header("IT")),
            record=npb.RecordMetadata(
                reference=f"IT-HONEST-{secrets.token_hex(4)}",
                category=pb.CATEGORY_IRREGULAR_CROSSING,
                event_date="2026-05-01",
                event_place="Lampedusa",
                capture_date="2026-05-01",
                birth_date="1990-05-17",
            ),
            template=npb.Template(model_id=MODEL, values=values.tolist()),
        )
        signed = kit.sign_action(enroll, "Enroll")  # as IT's officer signs it
        npb.EnrollResponse.FromString(enroll_call(signed.SerializeToString(), timeout=30))
    requester = fed.requester("DE")
    report = requester.lookup(template, header("DE"))
    assert sorted((n.member_state, n.outcome) for n in report.nodes) == [("FR", "ok"), ("IT", "ok")]
    assert [state for state, _ in report.matches] == ["IT", "IT"]
    # A packet for each candidate (enrolled from a template: no image, not verifiable).
    fetched = fed.packets(report)
    assert not fetched.failed
    assert sorted(p.handle for p in fetched.packets) == sorted(h for _, h in report.matches)
    assert all(not p.verifiable for p in fetched.packets)
    # DE's experts confirm one candidate and reject the other: IT is told (ReportRejections).
    confirmed, rejected = report.matches
    evidence = fed.evidence(report)
    verdicts = confirmations(fed.tmp, report.header, [confirmed], evidence=evidence)
    hit, qid = HitKey(*rejected), report.header.query_id
    verdicts.append(expert(fed.tmp, "DE").reject(qid, "DE", hit, evidence(hit), REJECT_REASONS[0]))
    resolved = requester.resolve(report, APPLICATION_DATE, verdicts)
    assert resolved.complete and [h["member_state"] for h in resolved.hits] == ["IT"]
    assert fed.nodes["IT"].handles.rejected(qid, "DE") == {rejected[1]}
    assert kit.completed_searches() == 2
    info_call = kit.call("IT", "coordinator", "/fedmatch.rpc.v1.NodeService/GetInfo")
    request = npb.InfoRequest(header=header_to_pb(header("DE")))
    info = npb.InfoResponse.FromString(info_call(request.SerializeToString(), timeout=TIMEOUT))
    assert info.member_state == "IT" and info.dimension == DIM
    for server, caller in (("coordinator", "operator-DE"), ("IT", "coordinator")):
        size = kit.log_of(server).size
        query = apb.AuditQuery(
            auditor=kit.auditor.name,
            issued_unix_ms=int(time.time() * 1000),
            nonce=secrets.token_bytes(16),
            method="GetConsistencyProof",
            size1=1,
            size2=size,
        ).SerializeToString()
        audit = apb.AuditRequest(query=query, signature=kit.auditor.sign(REQUEST_DOMAIN + query))
        proof_call = kit.call(server, AUDITOR, "/fedmatch.rpc.v1.AuditService/GetConsistencyProof")
        proof = apb.ProofResponse.FromString(proof_call(audit.SerializeToString(), timeout=TIMEOUT))
        assert proof.hashes
        health_call = kit.call(server, caller, "/grpc.health.v1.Health/Check")
        health = hpb.HealthCheckResponse.FromString(
            health_call(hpb.HealthCheckRequest().SerializeToString(), timeout=TIMEOUT)
        )
        assert health.status == hpb.HealthCheckResponse.SERVING
