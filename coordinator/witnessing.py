"""The coordinator's side of witnessing: have nodes cosign its checkpoints.

Before a search or a hit-details request goes to a node, the node must have verified a
checkpoint containing the coordinator's entry for it. A round publishes the current
checkpoint and sends it to the nodes with a consistency proof from the size each one last
cosigned (C2SP tlog-witness: a node that holds another size answers "conflict" with its
size, and the round retries from there). Valid cosignatures are attached to the published
checkpoint that auditors fetch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import grpc

from coordinator.fanout import NodeOutcome
from fedmatch.audit.entry import SignedEntry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import (
    Checkpoint,
    CosignatureVerifier,
    Note,
    Signature,
    add_signature,
    verify_cosignature,
)
from fedmatch.audit.witness import Authorization
from fedmatch.rpc.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["Witnesses"]

# Concurrent lookups run concurrent rounds, and a node answers "conflict" when another
# round moved it on meanwhile; each retry starts from the size it reported, so a handful
# of lookups at once settles in a few rounds. 16 bounds the work on a node that keeps
# conflicting (then reported as refused, never searched).
_ATTEMPTS = 16


class Witnesses:
    def __init__(
        self,
        log: AuditLog,
        stubs: Mapping[str, audit_pb2_grpc.WitnessServiceStub],
        keys: Mapping[str, CosignatureVerifier],
    ) -> None:
        self._log = log
        self._stubs = dict(stubs)
        self._keys = dict(keys)
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._cosigned: tuple[int, int, bytes] | None = None  # (size, cosigners, note)

    def round(
        self, states: Iterable[str], timeout: float
    ) -> tuple[int, dict[str, tuple[NodeOutcome, str]]]:
        """Publish a checkpoint and have ``states`` cosign it.

        Returns its size and the states that did not cosign, with why.
        """
        note = self._log.checkpoint()
        checkpoint = Checkpoint.parse(Note.parse(note).body)
        pending = set(states)
        failures: dict[str, tuple[NodeOutcome, str]] = {}
        cosignatures: dict[str, Signature] = {}
        # Nodes mostly last cosigned the same size: one proof per distinct size, not per node.
        proofs: dict[tuple[int, int], list[bytes]] = {}
        for _ in range(_ATTEMPTS):
            if not pending:
                break
            futures = {}
            for state in sorted(pending):
                with self._lock:
                    old = self._known.get(state, 0)
                lo, hi = sorted((old, checkpoint.size))
                if (lo, hi) not in proofs:
                    proofs[lo, hi] = (
                        [] if lo == 0 or lo == hi else self._log.consistency_proof(lo, hi)
                    )
                proof = proofs[lo, hi]
                request = audit_pb2.AddCheckpointRequest(
                    old_size=old, consistency_proof=proof, checkpoint=note
                )
                futures[state] = self._stubs[state].AddCheckpoint.future(request, timeout=timeout)
            retry: set[str] = set()
            for state, future in futures.items():
                try:
                    response: audit_pb2.AddCheckpointResponse = future.result()
                except grpc.RpcError as err:
                    code = err.code()
                    outcome = (
                        NodeOutcome.UNREACHABLE
                        if code == grpc.StatusCode.UNAVAILABLE
                        else NodeOutcome.DEADLINE_EXCEEDED
                        if code == grpc.StatusCode.DEADLINE_EXCEEDED
                        else NodeOutcome.REFUSED
                    )
                    failures[state] = (outcome, f"witness: {code.name}: {err.details() or ''}")
                    continue
                with self._lock:
                    self._known[state] = response.witnessed_size
                if response.conflict:
                    retry.add(state)
                    continue
                signature = self._cosignature(state, checkpoint, response)
                if signature is None:
                    failures[state] = (NodeOutcome.REFUSED, "witness: invalid cosignature")
                else:
                    cosignatures[state] = signature
            pending = retry
        for state in pending:
            failures[state] = (NodeOutcome.REFUSED, "witness: conflicting sizes")
        self._keep(checkpoint.size, note, cosignatures)
        return checkpoint.size, failures

    def authorize(
        self, entry: SignedEntry, states: Iterable[str], timeout: float
    ) -> tuple[Authorization, dict[str, tuple[NodeOutcome, str]]]:
        """Have ``states`` verify a checkpoint containing ``entry``: the inclusion proof to
        send them, and the states that could not (they must not be asked to work)."""
        size, failures = self.round(states, timeout)
        proof = tuple(self._log.inclusion_proof(entry.seq, size))
        return Authorization(entry.raw, entry.seq, size, proof), failures

    def _cosignature(
        self, state: str, checkpoint: Checkpoint, response: audit_pb2.AddCheckpointResponse
    ) -> Signature | None:
        raw = response.cosignature
        try:
            signature = Signature(response.witness_name, raw[:4], raw[4:])
            verify_cosignature(checkpoint.body(), signature, self._keys[state])
        except (AuditVerificationError, ValueError):
            return None
        except Exception:  # noqa: BLE001 - a malformed answer is a refusal, not a crash
            return None
        return signature

    def _keep(self, size: int, note: bytes, cosignatures: Mapping[str, Signature]) -> None:
        text = note
        for sig in cosignatures.values():
            text = add_signature(text, sig.name, sig.key_id, sig.value)
        with self._lock:
            current = self._cosigned
            if current is None or (size, len(cosignatures)) >= current[:2]:
                self._cosigned = (size, len(cosignatures), text)

    def cosigned_checkpoint(self) -> bytes:
        """The newest checkpoint with the most cosignatures gathered so far."""
        with self._lock:
            if self._cosigned is not None:
                return self._cosigned[2]
        return self._log.checkpoint()
