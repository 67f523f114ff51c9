"""The fedmatch error hierarchy.

Every error that crosses a module boundary is a subclass of :class:`FedmatchError`. Each class
maps to exactly one gRPC status code (see ``fedmatch.grpcutil.errors``), so that a servicer
never has to decide a status code itself. Messages are written for operators: they name the
field and the rule that failed and never carry templates, embeddings, scores, ciphertext
contents or keys.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "ConfigError",
    "DeadlineExceeded",
    "FedmatchError",
    "HEError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "PreconditionFailed",
    "ResourceLimit",
    "Unavailable",
]


class FedmatchError(Exception):
    """Base class of every fedmatch error."""


class InvalidInput(FedmatchError):
    """The caller sent something malformed or out of range (INVALID_ARGUMENT)."""


class NotFound(FedmatchError):
    """A named object (query, handle, node) does not exist (NOT_FOUND)."""


class PreconditionFailed(FedmatchError):
    """The request is well formed but the system is not in a state to serve it
    (FAILED_PRECONDITION), for example a probe from another face model."""


class PermissionDenied(FedmatchError):
    """The caller may not do this (PERMISSION_DENIED)."""


class ResourceLimit(FedmatchError):
    """A size or count bound was exceeded (RESOURCE_EXHAUSTED)."""


class Unavailable(FedmatchError):
    """A peer could not be reached (UNAVAILABLE)."""


class DeadlineExceeded(FedmatchError):
    """The caller's deadline passed or the call was cancelled (DEADLINE_EXCEEDED)."""


class ConfigError(FedmatchError):
    """A configuration value is missing or invalid; the message names the key."""


class HEError(InvalidInput):
    """A homomorphic-encryption object (key bundle, ciphertext) was refused."""


class ImplausibleResult(HEError):
    """A result block decrypted to values an honest node's search cannot produce (too many
    positives, magnitudes outside the masks' range): its node's answer is not used."""


class AlreadyExists(FedmatchError):
    """The object already exists, e.g. a reference number or a reused query id
    (ALREADY_EXISTS)."""
