"""Signed, tamper-evident audit logs: entries, Merkle trees, checkpoints, verification."""
