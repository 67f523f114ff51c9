"""In-process federation for tests: real SQLite files, real gRPC servers on port 0."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from coordinator.config import CoordinatorConfig, NodeEntry
from coordinator.service import CoordinatorService
from coordinator.servicer import serve_coordinator
from fedmatch.audit.auditor import AuditorConfig, PartyEntry
from fedmatch.audit.entry import AuditEvent, EventKind, digest_hex
from fedmatch.audit.events import handles_digest, header_event
from fedmatch.audit.note import Checkpoint, Note, NoteSigner
from fedmatch.audit.party import (
    COORDINATOR_ORIGIN,
    AuditConfig,
    PartyAudit,
    node_origin,
)
from fedmatch.audit.witness import Authorization
from fedmatch.demo.seed import seed_logged
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.fileio import write_file
from fedmatch.grpcutil.server import RunningServer, make_channel
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.pki.ca import TlsFiles
from fedmatch.pki.keystore import protect_file
from fedmatch.pki.names import dns_name
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.limits import (
    MAX_LOOKUP_RESPONSE_BYTES,
    MAX_NODE_RESPONSE_BYTES,
    MAX_RECEIVE_BYTES,
)
from fedmatch.protocol.replay import ReplayGuard
from fedmatch.protocol.statement import RequestSigner, SignedRequest
from fedmatch.protocol.transport import Security
from fedmatch.protocol.verification import Evidence, HitKey, SignedVerdict, VerdictSigner
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, verdict_to_pb
from fedmatch.requester import PacketFetch, Requester
from fedmatch.requester.enrolment import EnrolmentRecord, NodeEnroller
from fedmatch.requester.officer_channel import officer_channel
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc
from node.config import NodeConfig
from node.inbox import NoticeBox
from node.lifecycle import Lifecycle
from node.notices import CoordinatorRelay, NoticeSigner
from node.records import NewRecord, RecordMeta
from node.sealing import KeyEncryptionKey
from node.service import NodeService
from node.servicer import serve_node
from node.store import RecordStore

MODEL = "sface-2021dec-int8bq"
DIM = 128
TODAY = dt.date(2026, 11, 21)
# An adult's birth date for test records (enrolment needs one: minimum age 6).
BIRTH_DATE = dt.date(1990, 5, 17)

# Generating keys costs ~0.3 s; tests share one pair per member state (key ids belong to the
# state that registered them).
_KEYS: dict[str, RequesterKeys] = {}


def shared_keys(state: str = "DE") -> RequesterKeys:
    if state not in _KEYS:
        _KEYS[state] = RequesterKeys.generate()
    return _KEYS[state]


UNIT = "dublin-unit-1"
# The officer who signs a state's requests in most tests: their personal `officer`
# certificate (officer-1.officer.de.fedmatch.eu) names this id, which every request and log
# entry carries as its operator. Each state has a second officer (tests of one officer
# posing as another).
OPERATOR = "officer-1"
OTHER_OFFICER = "officer-2"
OFFICERS = (OPERATOR, OTHER_OFFICER)
# Hit verifiers: people of each state holding a `verifier` certificate (carl of DE is
# there to be revoked or misused in tests).
EXPERTS = {"DE": ("anna", "ben", "carl"), "IT": ("anna", "ben"), "FR": ("anna", "ben")}
TWO_EXPERTS = ("anna", "ben")


def expert_name(state: str, person: str) -> str:
    """The certificate name a verifier signs verdicts under."""
    return dns_name("verifier", state, person)


# The two DE experts who confirm hits in most tests, as logs name them.
VERIFIERS = tuple(expert_name("DE", p) for p in TWO_EXPERTS)
DEFAULT_STATES = ("DE", "IT", "FR")
AUDITOR_PARTY = "auditor-edps"


def pki(tmp: Path, *states: str) -> dict[str, PartyFiles]:
    """The test federation's PKI under ``tmp/pki``: root, scope CAs, and certificates and
    signing keys for the coordinator, a node, an operator workstation and the officers of
    :data:`OFFICERS` per state, a verifying authority for DE and an auditor. Created once;
    more states on demand."""
    everyone = sorted({*DEFAULT_STATES, *states})
    return provision(
        tmp / "pki", everyone, verifiers=["DE"], experts=EXPERTS,
        officers={s: OFFICERS for s in everyone},
    )  # fmt: skip


def security(tmp: Path, party: str) -> Security:
    """A party's TLS credentials and trust (``coordinator``, ``node-IT``, ``operator-DE``...)."""
    state = party.rsplit("-", 1)[-1] if "-" in party and not party.startswith("auditor") else ""
    return Security(pki(tmp, *([state] if len(state) == 2 else []))[party].tls)


def auditor_signer(tmp: Path) -> NoteSigner:
    return pki(tmp)[AUDITOR_PARTY].signer()


def officer_party(state: str, officer: str = OPERATOR) -> str:
    """The PKI party of an officer of ``state`` (``officer-officer-1-DE``)."""
    return f"officer-{officer}-{state}"


def request_signer(tmp: Path, state: str, officer: str = OPERATOR, **kw: Any) -> RequestSigner:
    """How ``officer`` of ``state`` signs their lookups and resolves: their own key and
    personal certificate (the workstation's certificate only makes the channel)."""
    party = pki(tmp, state)[officer_party(state, officer)]
    return RequestSigner(party.signer(), party.tls.chain.read_bytes(), **kw)


# The passphrase of every officer's protected key in the tests (fedmatch.pki.keystore).
OFFICER_PASSPHRASE = "officer passphrase 19"


def officer_key_file(tmp: Path, state: str, officer: str = OPERATOR) -> Path:
    """``officer``'s key, protected under :data:`OFFICER_PASSPHRASE` (made once)."""
    party = pki(tmp, state)[officer_party(state, officer)]
    out = tmp / "pki" / "keys" / f"{party.name}.key.enc"
    if not out.exists():
        protect_file(party.signing_key, out, OFFICER_PASSPHRASE)
    return out


def tls_table(files: TlsFiles) -> str:
    """A TOML ``[tls]`` table naming ``files``."""
    crls = ", ".join(f'"{c}"' for c in files.crls)
    return (
        f'[tls]\nkey = "{files.key}"\nchain = "{files.chain}"\nroot = "{files.root}"\n'
        f"crls = [{crls}]\n"
    )


def operator_toml(tmp: Path, state: str, officer: str = OPERATOR, path: Path | None = None) -> Path:
    """An operator workstation's TOML for ``officer`` of ``state`` (what ``--config`` of
    lookup, resolve, rights and confirm-decision reads): the workstation's ``[tls]`` and the
    officer's ``[officer]`` certificate, protected key and passphrase file (mode 0600)."""
    parties = pki(tmp, state)
    workstation, person = parties[f"operator-{state}"], parties[officer_party(state, officer)]
    passphrase = tmp / "pki" / "keys" / "officer.pass"
    if not passphrase.exists():
        write_file(passphrase, (OFFICER_PASSPHRASE + "\n").encode(), 0o600, replace=False)
    path = path or tmp / f"operator-{state}-{officer}.toml"
    key = officer_key_file(tmp, state, officer)
    path.write_text(
        f'[officer]\nchain = "{person.tls.chain}"\nkey = "{key}"\n'
        f'key_passphrase_file = "{passphrase}"\n' + tls_table(workstation.tls)
    )
    return path


def workstation_signer(tmp: Path, state: str, **kw: Any) -> RequestSigner:
    """A request signer holding the operator workstation's key and certificate: what no
    party accepts a request from (the officer's own key must sign)."""
    party = pki(tmp, state)[f"operator-{state}"]
    return RequestSigner(party.signer(), party.tls.chain.read_bytes(), **kw)


def expert(tmp: Path, state: str, person: str = "anna") -> VerdictSigner:
    """A hit verifier's workstation of ``state`` (see :data:`EXPERTS`)."""
    party = pki(tmp)[f"verifier-{person}-{state}"]
    return VerdictSigner(party.signer(), party.tls.chain.read_bytes())


NO_IMAGES = Evidence("", "")


def confirmations(
    tmp: Path,
    header: QueryHeader,
    hits: Sequence[tuple[str, bytes]],
    people: Sequence[str] = TWO_EXPERTS,
    probe_sex: Sex = Sex.UNSPECIFIED,
    evidence: Callable[[HitKey], Evidence] = lambda _: NO_IMAGES,
) -> list[SignedVerdict]:
    """Each of ``people`` (experts of the requesting state) confirms every hit, on the
    images ``evidence`` names for it (none by default: template records and probes)."""
    state = header.requesting_state
    return [
        expert(tmp, state, person).confirm(
            header.query_id, state, HitKey(s, h), evidence(HitKey(s, h)), probe_sex
        )
        for person in people
        for s, h in hits
    ]


def signed_lookup(tmp: Path, header: QueryHeader, ciphertext: bytes, **kw: Any) -> SignedRequest:
    """A lookup of the probe ``ciphertext`` as an operator of the requesting state signs it."""
    signer = request_signer(tmp, header.requesting_state, **kw)
    return signer.sign(header, "lookup", digest_hex(ciphertext))


def signed_resolve(tmp: Path, header: QueryHeader, **kw: Any) -> SignedRequest:
    """A resolve as an operator of the requesting state signs it."""
    return request_signer(tmp, header.requesting_state, **kw).sign(header, "resolve")


def signed_packets(tmp: Path, header: QueryHeader, probe_image: str = "") -> SignedRequest:
    """A packet request as an operator of the requesting state signs it (naming the probe
    image's SHA-256, "" for a template lookup)."""
    return request_signer(tmp, header.requesting_state).sign(header, "packets", probe_image)


def node_channel(
    tmp: Path,
    state: str,
    address: str,
    party: str = "coordinator",
    max_receive: int = MAX_NODE_RESPONSE_BYTES,
    max_send: int = MAX_RECEIVE_BYTES,
    officer: str | None = OPERATOR,
) -> grpc.Channel:
    """An mTLS channel to the node of ``state`` at ``address``, as ``party`` (only the
    coordinator may search; enrolment is for the node's own operators). On an operator
    workstation's channel (``operator-IT``...), ``officer`` of the workstation's state signs
    every operator action (fedmatch.requester.officer_channel); None sends them unsigned."""
    credentials = security(tmp, party).channel_credentials()
    channel = make_channel(address, max_receive, max_send, credentials, dns_name("node", state))
    if officer is None or not party.startswith("operator-"):
        return channel
    return officer_channel(channel, request_signer(tmp, party.removeprefix("operator-"), officer))


def coordinator_channel(
    tmp: Path,
    address: str,
    party: str,
    max_receive: int = MAX_LOOKUP_RESPONSE_BYTES,
    max_send: int = MAX_RECEIVE_BYTES,
) -> grpc.Channel:
    """An mTLS channel to the coordinator at ``address``, as ``party`` (``operator-DE``...)."""
    credentials = security(tmp, party).channel_credentials()
    return make_channel(address, max_receive, max_send, credentials, dns_name("coordinator", "eu"))


def gate(tmp: Path, party: str) -> Gate:
    """What a party checks of signed requests (its replay store lives in ``tmp``)."""
    return Gate(security(tmp, party).verify_chain, ReplayGuard(tmp / f"replay-{party}.sqlite"))


class Keyring:
    """The signing keys of a test federation's parties (those of its PKI, see :func:`pki`),
    by audit-log origin; ``directory`` is ``<tmp>/keys``."""

    def __init__(self, directory: Path) -> None:
        self.tmp = directory.parent

    def path(self, origin: str) -> Path:
        if origin == COORDINATOR_ORIGIN:
            return pki(self.tmp)["coordinator"].signing_key
        state = origin.rsplit("/", 1)[-1]
        return pki(self.tmp, state)[f"node-{state}"].signing_key

    def vkey(self, origin: str) -> str:
        return NoteSigner.load(self.path(origin)).vkey()


def node_audit(tmp: Path, state: str) -> PartyAudit:
    """A node's audit kit in ``tmp`` (the same directory again after a restart)."""
    keys = Keyring(tmp / "keys")
    origin = node_origin(state)
    config = AuditConfig(
        directory=tmp / f"audit-{state}",
        signing_key=keys.path(origin),
        auditors=(auditor_signer(tmp).vkey(),),
        coordinator_key=keys.vkey(COORDINATOR_ORIGIN),
    )
    return PartyAudit(config, origin)


def coordinator_audit(tmp: Path) -> PartyAudit:
    keys = Keyring(tmp / "keys")
    config = AuditConfig(
        directory=tmp / "audit-coordinator",
        signing_key=keys.path(COORDINATOR_ORIGIN),
        auditors=(auditor_signer(tmp).vkey(),),
    )
    return PartyAudit(config, COORDINATOR_ORIGIN)


def node_entry(tmp: Path, state: str, address: str) -> NodeEntry:
    return NodeEntry(state, address, Keyring(tmp / "keys").vkey(node_origin(state)))


# The coordinator's entries that let a node work, built exactly as coordinator/service.py
# builds them (lookup: search_authorized; resolve: hit_verified). Each names the signed
# request it authorizes (see signed_lookup, signed_resolve): the node sends work only for
# that very request.


def search_authorized(
    header: QueryHeader,
    ciphertext: bytes,
    key_id: str,
    registers: Sequence[str],
    *,
    signed: SignedRequest,
) -> AuditEvent:
    return header_event(
        EventKind.SEARCH_AUTHORIZED,
        header,
        probe_hash=digest_hex(ciphertext),
        registers=sorted(registers),
        labels={"key_id": key_id, "request": signed.digest()},
    )


def packets_authorized(
    header: QueryHeader, state: str, handles: Sequence[bytes], *, signed: SignedRequest
) -> AuditEvent:
    """The coordinator's entry before it asks ``state`` for the packets of ``handles``."""
    return header_event(
        EventKind.PACKETS_AUTHORIZED,
        header,
        registers=[state],
        outcome="authorized",
        counts={state.lower(): len(handles)},
        labels={f"handles_{state.lower()}": handles_digest(handles), "request": signed.digest()},
    )


def hit_verified(
    header: QueryHeader,
    state: str,
    handles: Sequence[bytes],
    verifiers: Sequence[str] | None = None,
    *,
    signed: SignedRequest,
) -> AuditEvent:
    if verifiers is None:  # the two experts of the requesting state (see confirmations)
        verifiers = [expert_name(header.requesting_state, p) for p in TWO_EXPERTS]
    return header_event(
        EventKind.HIT_VERIFIED,
        header,
        registers=[state],
        verifiers=tuple(sorted(verifiers)),
        outcome="confirmed",
        counts={state.lower(): len(handles)},
        labels={f"handles_{state.lower()}": handles_digest(handles), "request": signed.digest()},
    )


class CoordinatorRecord:
    """The coordinator's log without a coordinator, for tests that call a NodeService
    directly: appends an entry, has the node witness a checkpoint containing it (in process,
    as the WitnessService would) and returns the authorization to send with the request."""

    def __init__(self, tmp: Path) -> None:
        self.audit = coordinator_audit(tmp)

    def close(self) -> None:
        self.audit.close()

    def authorize(self, node: NodeService, event: AuditEvent) -> Authorization:
        log = self.audit.log
        entry = log.append(event)
        note = log.checkpoint()
        size = Checkpoint.parse(Note.parse(note).body).size
        old = node.witness.witnessed_size
        proof = log.consistency_proof(old, size) if 0 < old < size else []
        answer = node.add_checkpoint(old, proof, note)
        assert not answer.conflict and answer.cosignature is not None
        return Authorization(
            entry.raw, entry.seq, size, tuple(log.inclusion_proof(entry.seq, size))
        )


@dataclass
class Federation:
    nodes: dict[str, NodeService]
    servers: dict[str, RunningServer]
    coordinator: CoordinatorService
    coordinator_server: RunningServer
    tmp: Path
    stack: ExitStack = field(repr=False)
    # Each node's record lifecycle (marks, erasure, notices via the coordinator); its
    # ``clock`` may be replaced by a test.
    lifecycles: dict[str, Lifecycle] = field(default_factory=dict)
    # The verification packets fetched, by query id (see packets()).
    fetched: dict[str, PacketFetch] = field(default_factory=dict)

    def requester(self, state: str, officer: str = OPERATOR, **signer: Any) -> Requester:
        """``officer`` of ``state`` at an operator workstation: the workstation's mTLS
        credentials, the officer's signing key and certificate."""
        r = Requester(
            self.coordinator_server.address,
            state,
            shared_keys(state),
            UNIT,
            officer,
            request_signer(self.tmp, state, officer, **signer),
            security(self.tmp, f"operator-{state}").channel_credentials(),
        )
        self.stack.callback(r.close)
        return r

    def packets(self, report: Any, probe_image: bytes = b"") -> PacketFetch:
        """The verification packets of ``report``'s candidates, fetched once per query (as
        the requesting state's desk would, before its verifiers sign)."""
        qid = report.header.query_id
        if qid not in self.fetched:
            self.fetched[qid] = self.requester(report.header.requesting_state).fetch_packets(
                report, probe_image
            )
        return self.fetched[qid]

    def evidence(self, report: Any) -> Callable[[HitKey], Evidence]:
        """What a verdict on a hit of ``report`` binds: the released images' hashes."""
        fetched = self.packets(report)
        released = {HitKey(p.member_state, p.handle): p.image_sha256 for p in fetched.packets}
        return lambda hit: Evidence(fetched.probe_sha256, released.get(hit, ""))

    def verdicts(
        self,
        report: Any,
        people: Sequence[str] = TWO_EXPERTS,
        probe_sex: Sex = Sex.UNSPECIFIED,
    ) -> list[SignedVerdict]:
        """Experts of the requesting state confirm every candidate hit of ``report`` (a
        LookupReport), as their signed verdicts for a resolve, after its packets came."""
        return confirmations(
            self.tmp, report.header, report.matches, people, probe_sex, self.evidence(report)
        )

    def details_at_node(
        self,
        report: Any,
        verdicts: Sequence[SignedVerdict],
        verifiers: Sequence[str] | None = None,
    ) -> node_pb2.HitDetailsResponse:
        """Ask IT directly, as the coordinator would, for the details of ``report``'s first
        hit: a newly signed resolve, a hit_verified entry on the record naming ``verifiers``
        (the two experts by default), the given verdicts and the probe's sealed opening."""
        hdr, handles = report.header, [report.matches[0][1]]
        signed = signed_resolve(self.tmp, hdr)
        entry = hit_verified(hdr, "IT", handles, verifiers, signed=signed)
        stub = node_pb2_grpc.NodeServiceStub(self.node_channel("IT"))
        reply: node_pb2.HitDetailsResponse = stub.GetHitDetails(
            node_pb2.HitDetailsRequest(
                header=header_to_pb(hdr, signed),
                handles=handles,
                authorization=authorization_to_pb(self.authorize(entry, ["IT"])),
                verdicts=[verdict_to_pb(v) for v in verdicts],
                sealed_opening=sealed_opening(report, "IT"),
            ),
            timeout=20,
        )
        return reply

    def authorize(self, event: AuditEvent, states: Sequence[str]) -> Authorization:
        """Put ``event`` on the coordinator's record and have ``states`` witness a checkpoint
        containing it, as the coordinator does before it sends a search or a resolve."""
        entry = self.coordinator.audit.log.append(event)
        authorization, failures = self.coordinator.witnesses.authorize(entry, states, 20.0)
        assert not failures, failures
        return authorization

    def node_channel(
        self, state: str, party: str = "coordinator", officer: str | None = OPERATOR, **limits: int
    ) -> grpc.Channel:
        """An mTLS channel to this federation's node of ``state`` as ``party`` (an operator
        workstation's with ``officer``'s signature on every operator action, see
        :func:`node_channel`), closed with the federation."""
        channel = node_channel(
            self.tmp, state, self.servers[state].address, party, officer=officer, **limits
        )
        self.stack.callback(channel.close)
        return channel

    def coordinator_channel(self, party: str, **limits: int) -> grpc.Channel:
        """An mTLS channel to this federation's coordinator as ``party``, closed with it."""
        channel = coordinator_channel(self.tmp, self.coordinator_server.address, party, **limits)
        self.stack.callback(channel.close)
        return channel


def header(state: str, purpose: Purpose = Purpose.ASYLUM_DUBLIN) -> QueryHeader:
    import secrets

    return QueryHeader(
        secrets.token_hex(16),
        state,
        purpose,
        "Reg. (EU) 2024/1358 Art. 27",
        "CASE-1",
        unit=UNIT,
        operator=OPERATOR,
    )


def enrol(
    node: NodeService,
    template: np.ndarray,
    reference: str,
    category: Category,
    event_date: dt.date,
    place: str = "Somewhere",
    sex: Sex = Sex.MALE,
) -> None:
    meta = RecordMeta(
        reference, category, event_date, place, event_date, sex, "op-1",
        birth_date=BIRTH_DATE,
    )  # fmt: skip
    node.enroll(header(node.member_state), NewRecord(meta, template.astype(np.float32), MODEL))


def enrol_photo(
    fed: Federation,
    state: str,
    photo: bytes,
    reference: str,
    sex: Sex = Sex.UNSPECIFIED,
    category: Category = Category.APPLICANT,
) -> int:
    """Enrol from a photograph through ``state``'s node RPC as its own operator: the node
    makes the template and keeps the facial image (a record verifiable by image)."""
    day = dt.date(2026, 2, 1)
    record = EnrolmentRecord(
        reference, category, day, "Centre", day, sex, OPERATOR, birth_date=BIRTH_DATE
    )
    credentials = security(fed.tmp, f"operator-{state}").channel_credentials()
    address = fed.servers[state].address
    signer = request_signer(fed.tmp, state)
    with NodeEnroller(address, MODEL, 60.0, credentials, state, signer=signer) as node:
        return node.enroll_photo(header(state), record, photo, reference)


@contextmanager
def federation(
    tmp: Path,
    states: tuple[str, ...] = ("DE", "IT", "FR"),
    records: int = 300,
    node_deadline: float = 20.0,
    extra_nodes: tuple[NodeEntry, ...] = (),
    workers: int = 1,
    kek: KeyEncryptionKey | None = None,  # templates encrypted at rest under this key
    now: Callable[[], dt.datetime] | None = None,  # the coordinator's wall clock (UTC)
    waiver: str = "",  # the legal reference of a second-person waiver (everywhere)
    # Server threads of every node and the coordinator (None: their defaults). A peer's
    # share of a server is a fraction of them (fedmatch.grpcutil.shares).
    max_workers: int | None = None,
    he_param_set: str = DEFAULT_PARAM_SET.name,  # the federation's, at every party
) -> Iterator[Federation]:
    with ExitStack() as stack:
        nodes: dict[str, NodeService] = {}
        lifecycles: dict[str, Lifecycle] = {}
        servers: dict[str, RunningServer] = {}
        for i, state in enumerate(states):
            db = tmp / f"{state}.sqlite"
            audit = node_audit(tmp, state)
            stack.callback(audit.close)
            if records:
                # Logged as `node seed` logs them: the register reconciles with the log.
                seed_logged(
                    audit.log, db, state, records, seed=100 + i, dimension=DIM, model_id=MODEL,
                    today=TODAY, kek=kek,
                )  # fmt: skip
            cfg = NodeConfig(
                member_state=state, database=db, dimension=DIM, model_id=MODEL,
                search_workers=workers, verification_waiver=waiver,
                max_workers=max_workers or NodeConfig.max_workers, he_param_set=he_param_set,
            )  # fmt: skip
            store = RecordStore(db, state, DIM, MODEL, kek)
            stack.callback(store.close)
            node_gate = gate(tmp, f"node-{state}")
            stack.callback(node_gate.close)
            svc = NodeService(cfg, store, audit, node_gate)
            stack.callback(svc.close)
            box = NoticeBox(cfg.notices_path, state)
            stack.callback(box.close)
            lifecycles[state] = Lifecycle(svc, box)
            srv = serve_node(
                svc, security(tmp, f"node-{state}"), "127.0.0.1:0", lifecycle=lifecycles[state]
            )
            stack.callback(srv.stop, 0.2)
            nodes[state], servers[state] = svc, srv
        ccfg = CoordinatorConfig(
            model_id=MODEL,
            dimension=DIM,
            node_deadline_seconds=node_deadline,
            nodes=tuple(node_entry(tmp, s, servers[s].address) for s in states) + extra_nodes,
            verification_waiver=waiver,
            max_workers=max_workers or CoordinatorConfig.max_workers,
            he_param_set=he_param_set,
        )
        caudit = coordinator_audit(tmp)
        stack.callback(caudit.close)
        coordinator_gate = gate(tmp, "coordinator")
        stack.callback(coordinator_gate.close)
        coordinator_security = security(tmp, "coordinator")
        coord = CoordinatorService(
            ccfg,
            caudit,
            coordinator_gate,
            coordinator_security.channel_credentials(),
            now=now or (lambda: dt.datetime.now(dt.UTC)),
        )
        stack.callback(coord.close)
        csrv = serve_coordinator(coord, coordinator_security, "127.0.0.1:0")
        stack.callback(csrv.stop, 0.2)
        for state, lifecycle in lifecycles.items():
            # Nodes send notices through the coordinator, as node-<state> over mTLS.
            node_security = security(tmp, f"node-{state}")
            relay = CoordinatorRelay(
                csrv.address,
                node_security.channel_credentials(),
                NoticeSigner(nodes[state].audit.signer, node_security.chain_pem()),
            )
            stack.callback(relay.close)
            lifecycle.relay = relay
        yield Federation(nodes, servers, coord, csrv, tmp, stack, lifecycles)


def auditor_config(
    tmp: Path,
    fed: Federation,
    state_dir: Path | None = None,
    addresses: dict[str, str] | None = None,
    peers: tuple[Path, ...] = (),
) -> AuditorConfig:
    """An auditor of ``fed`` (the PKI's auditor, trusted by every party); ``addresses``
    overrides where a party is reached (a node or "coordinator"), e.g. an impostor."""
    auditor = pki(tmp)[AUDITOR_PARTY]
    keys = Keyring(tmp / "keys")
    where = {"coordinator": fed.coordinator_server.address}
    where |= {s: srv.address for s, srv in fed.servers.items()}
    where |= addresses or {}
    return AuditorConfig(
        name=auditor.signer().name,
        signing_key=auditor.signing_key,
        state_dir=state_dir or tmp / "auditor-state",
        coordinator=PartyEntry(
            "coordinator", COORDINATOR_ORIGIN, where["coordinator"], keys.vkey(COORDINATOR_ORIGIN)
        ),
        nodes=tuple(
            PartyEntry(s, node_origin(s), where[s], keys.vkey(node_origin(s))) for s in fed.nodes
        ),
        peers=peers,
        security=Security(auditor.tls),
    )


def write_auditor_toml(config: AuditorConfig, path: Path) -> Path:
    """The TOML file `fedmatch audit verify --config` reads, for ``config``."""
    nodes = "".join(
        f'[[nodes]]\nmember_state = "{n.name}"\naddress = "{n.address}"\nkey = "{n.key}"\n'
        for n in config.nodes
    )
    tls = ""
    if config.security is not None:
        f = config.security.files
        tls = f'[tls]\nkey = "{f.key}"\nchain = "{f.chain}"\nroot = "{f.root}"\n'
        tls += "crls = [" + ", ".join(f'"{c}"' for c in f.crls) + "]\n"
    path.write_text(
        f'[auditor]\nname = "{config.name}"\nsigning_key = "{config.signing_key}"\n'
        f'state_dir = "{config.state_dir}"\n'
        + "".join(f'peers = ["{p}"]\n' for p in config.peers[:1])
        + tls
        + f'[coordinator]\naddress = "{config.coordinator.address}"\n'
        f'key = "{config.coordinator.key}"\n' + nodes
    )
    return path


def sealed_opening(report: Any, state: str) -> bytes:
    """The probe's opening of a lookup ``report`` sealed to ``state``'s node, as the
    requester sends it at resolve: for tests that call a node as the coordinator would."""
    from fedmatch.protocol.opening import seal_opening

    assert report.opening is not None
    return seal_opening(report.opening, report.opening_keys[state], report.header.query_id, state)


def as_sent(ct: Any) -> bytes:
    """Any SEAL ciphertext in the form a probe travels in (second part emptied, a zero seed
    and commitment in front, itself as its norm copy): a hostile probe that passes the form
    check and is refused, or garbled, for what it is."""
    from fedmatch.he import sealfmt, sealio, uniform

    body, version = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
    sealfmt.ciphertext_at(body, 0, "ciphertext").data[1] = 0
    sent = sealfmt.pack(body, version)
    return uniform.probe_envelope(bytes(32), bytes(32), sent, sent)
