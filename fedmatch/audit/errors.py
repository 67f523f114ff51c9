"""Errors of the audit layer.

Verification raises and never returns a bool: a caller cannot forget to check a result.
Every message names the object and the rule that failed (sizes, indices, signer names) and
never quotes entry contents.
"""

from __future__ import annotations

from fedmatch.errors import FedmatchError, PreconditionFailed

__all__ = ["AuditError", "AuditIntegrityError", "AuditVerificationError"]


class AuditError(FedmatchError):
    """Base class of audit-layer errors."""


class AuditVerificationError(AuditError):
    """A proof, signature, checkpoint or entry did not verify."""


class AuditIntegrityError(AuditError, PreconditionFailed):
    """A party's own log does not match its last checkpoint (or cannot be written): the
    party refuses to continue rather than serve or extend a broken history."""
