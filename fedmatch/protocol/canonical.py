"""The one canonical JSON encoding every signed or hashed document uses (audit entries,
signed requests, verdicts, notices, case proposals and confirmations): sorted keys, no
spaces, ASCII only, so that a signature or digest never depends on who serialized it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json"]


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
