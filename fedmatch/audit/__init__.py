"""Signed, tamper-evident audit logs: entries, Merkle trees, checkpoints, verification.

- a party's own log: :mod:`~fedmatch.audit.entry` and :mod:`~fedmatch.audit.events` (what an
  event records and how it is built), :mod:`~fedmatch.audit.log` (the append-only file,
  its Merkle tree and signed checkpoints), :mod:`~fedmatch.audit.merkle` (RFC 9162 proofs),
  :mod:`~fedmatch.audit.note` (signed notes, checkpoints, cosignatures, Ed25519 keys),
  :mod:`~fedmatch.audit.party` (a party's audit kit: configuration, key, log);
- witnessing: :mod:`~fedmatch.audit.witness` (a node cosigning the coordinator's log and
  checking that a request is on its record);
- auditors: :mod:`~fedmatch.audit.access` and :mod:`~fedmatch.audit.servicer` (who may read
  a log, and the gRPC edge), :mod:`~fedmatch.audit.client`, :mod:`~fedmatch.audit.auditor`,
  :mod:`~fedmatch.audit.crosscheck`, :mod:`~fedmatch.audit.stats`,
  :mod:`~fedmatch.audit.watch` (verify every party, cross-check the federation, publish
  aggregates, keep watching), :mod:`~fedmatch.audit.readers` and
  :mod:`~fedmatch.audit.proofs` (a verified view of one log, live or from the auditor's
  copy; entries, proofs and search bundles that verify offline);
- restores: :mod:`~fedmatch.audit.restores` (a node's signed announcement of a restore from
  a backup, an auditor's signed acknowledgement) and :mod:`~fedmatch.audit.acknowledge`
  (``audit accept-restore``: checked against what the auditor verified, then verification
  continues from the backup's checkpoint).

Imports the shared top-level modules and the library rooms ``grpcutil``, ``pki`` and
``protocol``; imported by the roles and everything above them, never by ``he``,
``biometrics`` or ``grpcutil``.
"""
