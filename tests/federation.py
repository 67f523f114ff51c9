"""In-process federation for tests: real SQLite files, real gRPC servers on port 0."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.config import CoordinatorConfig, NodeEntry
from coordinator.service import CoordinatorService
from coordinator.servicer import serve_coordinator
from fedmatch.domain import Category, Purpose, QueryHeader, Sex
from fedmatch.grpcutil.server import RunningServer
from fedmatch.he.keys import RequesterKeys
from fedmatch.requester import Requester
from fedmatch.seed import seed_register
from node.config import NodeConfig
from node.records import NewRecord, RecordMeta
from node.service import NodeService
from node.servicer import serve_node
from node.store import RecordStore

MODEL = "sface-2021dec-int8bq"
DIM = 128
TODAY = dt.date(2026, 11, 21)

# Generating keys costs ~0.3 s; tests share one pair per member state (key ids belong to the
# state that registered them).
_KEYS: dict[str, RequesterKeys] = {}


def shared_keys(state: str = "DE") -> RequesterKeys:
    if state not in _KEYS:
        _KEYS[state] = RequesterKeys.generate()
    return _KEYS[state]


@dataclass
class Federation:
    nodes: dict[str, NodeService]
    servers: dict[str, RunningServer]
    coordinator: CoordinatorService
    coordinator_server: RunningServer
    stack: ExitStack = field(repr=False)

    def requester(self, state: str) -> Requester:
        r = Requester(self.coordinator_server.address, state, shared_keys(state))
        self.stack.callback(r.close)
        return r


def header(state: str, purpose: Purpose = Purpose.ASYLUM_DUBLIN) -> QueryHeader:
    import secrets

    return QueryHeader(
        secrets.token_hex(16), state, purpose, "Reg. (EU) 2024/1358 Art. 27", "CASE-1"
    )


def enrol(
    node: NodeService,
    template: np.ndarray,
    reference: str,
    category: Category,
    event_date: dt.date,
    place: str = "Somewhere",
) -> None:
    meta = RecordMeta(reference, category, event_date, place, event_date, Sex.MALE, "op-1")
    node.enroll(header(node.member_state), NewRecord(meta, template.astype(np.float32), MODEL))


@contextmanager
def federation(
    tmp: Path,
    states: tuple[str, ...] = ("DE", "IT", "FR"),
    records: int = 300,
    node_deadline: float = 20.0,
    extra_nodes: tuple[NodeEntry, ...] = (),
    workers: int = 1,
) -> Iterator[Federation]:
    with ExitStack() as stack:
        nodes: dict[str, NodeService] = {}
        servers: dict[str, RunningServer] = {}
        for i, state in enumerate(states):
            db = tmp / f"{state}.sqlite"
            if records:
                seed_register(
                    db, state, records, seed=100 + i, dimension=DIM, model_id=MODEL, today=TODAY
                )
            cfg = NodeConfig(
                member_state=state, database=db, dimension=DIM, model_id=MODEL,
                search_workers=workers,
            )  # fmt: skip
            store = RecordStore(db, state, DIM, MODEL)
            stack.callback(store.close)
            svc = NodeService(cfg, store)
            stack.callback(svc.close)
            srv = serve_node(svc, "127.0.0.1:0")
            stack.callback(srv.stop, 0.2)
            nodes[state], servers[state] = svc, srv
        ccfg = CoordinatorConfig(
            model_id=MODEL,
            dimension=DIM,
            node_deadline_seconds=node_deadline,
            nodes=tuple(NodeEntry(s, servers[s].address) for s in states) + extra_nodes,
        )
        coord = CoordinatorService(ccfg)
        stack.callback(coord.close)
        csrv = serve_coordinator(coord, "127.0.0.1:0")
        stack.callback(csrv.stop, 0.2)
        yield Federation(nodes, servers, coord, csrv, stack)
