"""`fedmatch node mark|unmark|record-status|link-hit|erase|route|inbox|ack`: an operator of a state
working its own node's record lifecycle (marks of both kinds, the record's Dublin status, the
links of its records to other states' records they hit, early erasure, routed rights
requests, the inbox of notices).

Each command connects to the node with the operator workstation's mTLS certificate (the
``--config`` file `fedmatch enroll` reads; the node refuses any other state's operator),
signs its request with the key of the officer of that file's ``[officer]`` table (the
node logs that officer as who acted) and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fedmatch.cli.common import (
    EXIT_OK,
    load_operator,
    new_header,
    officer_id,
    operator_args,
    warn_insecure,
)
from fedmatch.domain import Purpose, reference_digest
from fedmatch.grpcutil.server import make_channel
from fedmatch.pki.names import dns_name
from fedmatch.protocol.limits import MAX_RECEIVE_BYTES
from fedmatch.protocol.wire import header_to_pb
from fedmatch.requester.officer_channel import officer_channel
from fedmatch.rpc.v1 import node_pb2, node_pb2_grpc

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("mark", "unmark", "record-status", "link-hit", "erase", "route", "inbox", "ack")

# The default legal basis each action is logged with (overridable with --legal-basis).
_BASIS = {
    "mark": "Reg. (EU) 2024/1358 Art. 31",
    "unmark": "Reg. (EU) 2024/1358 Art. 31",
    "record-status": "Reg. (EU) 2024/1358 Art. 16, 28",
    "link-hit": "Reg. (EU) 2024/1358 Art. 31(1)",
    "erase": "Reg. (EU) 2024/1358 Art. 30",
    "route": "Reg. (EU) 2024/1358 Art. 43",
    "inbox": "Reg. (EU) 2024/1358 Art. 31",
    "ack": "Reg. (EU) 2024/1358 Art. 31",
}


def add_parsers(node_sub: Any) -> None:
    """Register the lifecycle commands under `fedmatch node`."""
    helps = {
        "mark": "mark a record (protection granted, Art. 31(1); residence document, 31(4))",
        "unmark": "remove a record's mark (protection withdrawn, Art. 31(3))",
        "record-status": "record a Dublin status: state indicated as responsible and basis "
        "(Art. 16(1)), transfer / removal / left-territory dates, relocation (Art. 28(4))",
        "link-hit": "record that your record produced a hit with another state's record "
        "(its marks are then passed on to that state, Art. 31(1))",
        "erase": "erase a record before its retention ends (citizenship, erasure request)",
        "route": "route a data subject's correction or erasure request to the holding state",
        "inbox": "list the notices other states sent to your node (overdue ones flagged)",
        "ack": "acknowledge an inbox item (it was acted upon)",
    }
    for name in COMMANDS:
        p = node_sub.add_parser(name, help=helps[name])
        p.add_argument("--node", required=True, help="your node's address host:port")
        operator_args(p, "the action")
        p.add_argument("--state", required=True, help="your member state (the node's)")
        p.add_argument("--unit", default="records-unit", help="your unit (logged)")
        p.add_argument("--legal-basis", default=_BASIS[name], help="logged legal basis")
        p.add_argument("--case-reference", default="-", help="case or file number (logged)")
        p.add_argument("--dev-insecure", action="store_true", help="development only: plaintext")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds")
        if name in ("mark", "unmark", "record-status", "link-hit", "erase", "route"):
            p.add_argument("--reference", required=True, help="the record's reference number")
        if name in ("mark", "unmark"):
            p.add_argument(
                "--kind",
                required=name == "mark",
                default="",
                choices=["protection_granted", "residence_document"],
                help="the mark's kind: protection_granted (Art. 31(1), applicant records) or "
                "residence_document (Art. 31(4), irregular crossing, illegal stay, SAR)",
            )
        if name == "record-status":
            p.add_argument("--responsible-state", default="", help="state indicated (16(1))")
            p.add_argument("--responsible-basis", default="", help='e.g. "AMMR Art. 33(1)"')
            for date in ("transferred-on", "removed-on", "left-territory-on", "relocated-on"):
                p.add_argument(f"--{date}", default="", help="YYYY-MM-DD")
            p.add_argument("--relocated-to", default="", help="state of relocation (28(4))")
            p.add_argument(
                "--clear",
                action="append",
                default=[],
                # node.lifecycle.STATUS_FIELDS (not imported: the command stays light)
                choices=[
                    "responsible",
                    "transferred_on",
                    "removed_on",
                    "left_territory_on",
                    "relocation",
                ],
                help="reset a field (repeatable)",
            )
        if name == "link-hit":
            p.add_argument("--other-state", required=True, help="the state whose record hit")
            other = p.add_mutually_exclusive_group(required=True)
            other.add_argument(
                "--other-reference",
                help="that record's reference number, as the resolve printed it",
            )
            other.add_argument("--other-digest", help="or that record's reference digest")
            p.add_argument("--query-id", required=True, help="the query of the hit")
        if name == "erase":
            p.add_argument(
                "--reason", required=True, choices=["citizenship_acquired", "erasure_request"]
            )
        if name == "route":
            p.add_argument(
                "--kind", required=True, choices=["correction_request", "erasure_request"]
            )
            p.add_argument("--to", required=True, help="the state that holds the record")
            p.add_argument("--query-id", default="", help="the query whose hit revealed it")
        if name == "inbox":
            p.add_argument("--open", action="store_true", help="only items not acknowledged")
        if name == "ack":
            p.add_argument("--item", type=int, required=True, help="inbox item id")


def _item(pb: node_pb2.InboxItem) -> dict[str, Any]:
    n = pb.notice
    return {
        "item": pb.item_id, "kind": n.kind, "from": n.from_state, "reference": n.reference,
        "reference_digest": n.reference_digest, "query_id": n.query_id,
        "case_reference": n.case_reference, "received": pb.received, "due": pb.due,
        "status": pb.status, "overdue": pb.overdue, "acknowledged_by": pb.acknowledged_by,
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    insecure = warn_insecure(args, "node " + args.node_command)
    security, signer = load_operator(args.config, insecure, args.state, signs=True)
    assert security is not None and signer is not None
    credentials = security.channel_credentials()
    header = header_to_pb(
        new_header(
            args.state,
            Purpose.ASYLUM_DUBLIN,
            args.legal_basis,
            args.case_reference,
            args.unit,
            officer_id(args, signer),  # who acts: the officer whose key signs
        )
    )
    channel = make_channel(
        args.node,
        MAX_RECEIVE_BYTES,
        MAX_RECEIVE_BYTES,
        credentials,
        dns_name("node", args.state) if credentials is not None else None,
    )
    try:
        out = _call(node_pb2_grpc.NodeServiceStub(officer_channel(channel, signer)), args, header)
    finally:
        channel.close()
    print(json.dumps(out))
    return EXIT_OK


def _call(stub: node_pb2_grpc.NodeServiceStub, args: argparse.Namespace, header: Any) -> Any:
    t = args.timeout
    cmd = args.node_command
    if cmd in ("mark", "unmark", "erase"):
        if cmd == "erase":
            r = stub.EraseRecord(
                node_pb2.EraseRecordRequest(
                    header=header, reference=args.reference, reason=args.reason
                ),
                timeout=t,
            )
        else:
            r = stub.MarkRecord(
                node_pb2.MarkRecordRequest(
                    header=header,
                    reference=args.reference,
                    marked=cmd == "mark",
                    mark_kind=args.kind,
                ),
                timeout=t,
            )
        return _outcome(r)
    if cmd in ("record-status", "link-hit"):
        if cmd == "record-status":
            r = stub.SetRecordStatus(
                node_pb2.SetRecordStatusRequest(
                    header=header,
                    reference=args.reference,
                    responsible_state=args.responsible_state,
                    responsible_basis=args.responsible_basis,
                    transferred_on=args.transferred_on,
                    removed_on=args.removed_on,
                    left_territory_on=args.left_territory_on,
                    relocated_to=args.relocated_to,
                    relocated_on=args.relocated_on,
                    clear=args.clear,
                ),
                timeout=t,
            )
        else:
            r = stub.LinkOwnHit(
                node_pb2.LinkOwnHitRequest(
                    header=header,
                    reference=args.reference,
                    other_state=args.other_state,
                    other_digest=args.other_digest
                    or reference_digest(args.other_state, args.other_reference),
                    query_id=args.query_id,
                ),
                timeout=t,
            )
        return _outcome(r)
    if cmd == "route":
        routed = stub.RouteRightsRequest(
            node_pb2.RouteRightsRequestRequest(
                header=header,
                kind=args.kind,
                to_state=args.to,
                reference=args.reference,
                query_id=args.query_id,
            ),
            timeout=t,
        )
        return {"notice_id": routed.notice_id, "outcome": routed.outcome}
    if cmd == "inbox":
        listed = stub.ListInbox(
            node_pb2.ListInboxRequest(header=header, open_only=args.open), timeout=t
        )
        return {"items": [_item(i) for i in listed.items], "overdue": listed.overdue}
    if cmd == "ack":
        acked = stub.AcknowledgeInbox(
            node_pb2.AcknowledgeInboxRequest(header=header, item_id=args.item), timeout=t
        )
        return _item(acked)
    raise AssertionError(cmd)  # unreachable: argparse checks the command


def _outcome(r: node_pb2.LifecycleResponse) -> dict[str, Any]:
    return {
        "outcome": r.outcome,
        "notices_sent": r.notices_sent,
        "notices_pending": r.notices_pending,
    }
