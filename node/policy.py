"""A node's search policy: which purposes may search which categories, law-enforcement
conditions, and per-requester limits (DOMAIN.md section 4).

The policy is versioned; the node logs it when it differs from the last one logged. Every
refusal names its rule. Live or bulk scanning is impossible by construction elsewhere (one
probe per request, no streaming RPC); the limits here bound what a requester can do even
with valid credentials.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmatch.domain import Category, Purpose
from fedmatch.errors import ConfigError, PermissionDenied

__all__ = ["DEFAULT_MARKED_PURPOSES", "DEFAULT_PURPOSES", "SearchPolicy", "load_policy"]

_ALL = tuple(c.value for c in Category)
# Asylum, border and stay checks may search every category (marked records follow their
# own rules, DOMAIN.md section 1); a data-subject request only finds the subject's records.
DEFAULT_PURPOSES: Mapping[str, tuple[str, ...]] = {
    Purpose.ASYLUM_DUBLIN.value: _ALL,
    Purpose.BORDER_CONTROL.value: _ALL,
    Purpose.ILLEGAL_STAY_CHECK.value: _ALL,
    Purpose.RESETTLEMENT.value: _ALL,
    Purpose.LAW_ENFORCEMENT.value: _ALL,
    Purpose.DATA_SUBJECT_REQUEST.value: _ALL,
}
# Purposes that still see a marked record (protection granted). The recast keeps marked data
# available for comparisons (Reg. 2024/1358 Art. 31(1)) for asylum, border and stay checks;
# resettlement and law-enforcement searches do not see them unless a state's policy says
# so (a cautious default, to confirm).
DEFAULT_MARKED_PURPOSES: tuple[str, ...] = (
    Purpose.ASYLUM_DUBLIN.value,
    Purpose.BORDER_CONTROL.value,
    Purpose.ILLEGAL_STAY_CHECK.value,
    Purpose.DATA_SUBJECT_REQUEST.value,
)


@dataclass(frozen=True)
class SearchPolicy:
    version: str = "2026-11-p1"
    purposes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PURPOSES))
    # Per requesting state: searches a minute (token bucket) and a UTC day.
    requests_per_minute: int = 120
    daily_quota: int = 20_000
    marked_purposes: tuple[str, ...] = DEFAULT_MARKED_PURPOSES

    def sees_marked(self, purpose: str) -> bool:
        """Whether a search for ``purpose`` may match marked records."""
        return purpose in self.marked_purposes

    def __post_init__(self) -> None:
        if not self.version.strip():
            raise ConfigError("policy.version is required")
        for purpose, categories in self.purposes.items():
            if purpose not in {p.value for p in Purpose}:
                raise ConfigError(f"policy.purposes: unknown purpose {purpose!r}")
            unknown = set(categories) - set(_ALL)
            if unknown:
                raise ConfigError(
                    f"policy.purposes.{purpose}: unknown category {sorted(unknown)[0]}"
                )
        for purpose in self.marked_purposes:
            if purpose not in {p.value for p in Purpose}:
                raise ConfigError(f"policy.marked_purposes: unknown purpose {purpose!r}")
        if self.requests_per_minute < 1 or self.daily_quota < 1:
            raise ConfigError("policy limits must be at least 1")

    def fingerprint(self) -> str:
        body = json.dumps(
            {
                "version": self.version,
                "purposes": {k: sorted(v) for k, v in sorted(self.purposes.items())},
                "requests_per_minute": self.requests_per_minute,
                "daily_quota": self.daily_quota,
                "marked_purposes": sorted(self.marked_purposes),
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def check(
        self,
        purpose: str,
        categories: tuple[str, ...],
        approved: bool,
        prior_check: str,
    ) -> None:
        """Raise PermissionDenied unless this purpose may search these categories."""
        allowed = self.purposes.get(purpose)
        if allowed is None:
            raise PermissionDenied(f"policy {self.version}: purpose {purpose} may not search")
        if not categories:
            raise PermissionDenied("the request names no register category to search")
        refused = [c for c in categories if c not in allowed]
        if refused:
            raise PermissionDenied(
                f"policy {self.version}: purpose {purpose} may not search category {refused[0]}"
            )
        if purpose == Purpose.LAW_ENFORCEMENT.value:
            if not approved:
                raise PermissionDenied(
                    "law-enforcement search without the verifying authority's signature"
                )
            if not prior_check.strip():
                raise PermissionDenied(
                    "law-enforcement search without a reference to the prior national check"
                )


def load_policy(path: Path | None) -> SearchPolicy:
    """The ``[policy]`` table of a node's TOML file (defaults when absent)."""
    if path is None:
        return SearchPolicy()
    with path.open("rb") as fh:
        raw: Any = tomllib.load(fh).get("policy", {})
    if not isinstance(raw, dict):
        raise ConfigError("[policy] must be a table")
    known = {"version", "purposes", "requests_per_minute", "daily_quota", "marked_purposes"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"policy.{sorted(unknown)[0]}: unknown key")
    purposes = raw.get("purposes", DEFAULT_PURPOSES)
    if not isinstance(purposes, dict) or not all(
        isinstance(v, list | tuple) and all(isinstance(c, str) for c in v)
        for v in purposes.values()
    ):
        raise ConfigError("policy.purposes maps purposes to lists of categories")
    marked = raw.get("marked_purposes", DEFAULT_MARKED_PURPOSES)
    if not isinstance(marked, list | tuple) or not all(isinstance(p, str) for p in marked):
        raise ConfigError("policy.marked_purposes is a list of purposes")
    try:
        return SearchPolicy(
            version=str(raw.get("version", SearchPolicy.version)),
            purposes={k: tuple(v) for k, v in purposes.items()},
            requests_per_minute=int(raw.get("requests_per_minute", 120)),
            daily_quota=int(raw.get("daily_quota", 20_000)),
            marked_purposes=tuple(marked),
        )
    except (TypeError, ValueError):
        raise ConfigError("policy limits must be integers") from None
