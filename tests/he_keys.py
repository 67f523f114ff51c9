"""Requester keys per parameter set, generated once per test process.

The default set's keys are :func:`tests.federation.shared_keys` (the same objects, so a test
that mixes both helpers registers one key id); any other set gets its own, cached here.
Generating a set's Galois keys takes a few seconds: tests share them instead.
"""

from __future__ import annotations

from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.params import DEFAULT_PARAM_SET, ParamSet
from tests.federation import shared_keys

__all__ = ["keys_for"]

_KEYS: dict[tuple[str, str], RequesterKeys] = {}


def keys_for(params: ParamSet, state: str = "DE") -> RequesterKeys:
    """The requester keys of ``state`` for ``params``."""
    if params == DEFAULT_PARAM_SET:
        return shared_keys(state)
    key = (params.name, state)
    if key not in _KEYS:
        _KEYS[key] = RequesterKeys.generate(params)
    return _KEYS[key]
