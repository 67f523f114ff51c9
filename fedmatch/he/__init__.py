"""Homomorphic encryption: the only package that imports tenseal.

Public surface:

- :mod:`fedmatch.he.params`: named, 128-bit secure parameter sets (and why these numbers);
- :mod:`fedmatch.he.keys`: the requester's key pair, its public bundle, and the validation
  a node applies to a received bundle;
- :mod:`fedmatch.he.engine`: the search engine interface and the packed kernel that returns
  only masked match bits in a fresh per-query layout;
- :mod:`fedmatch.he.sharded`: the same kernel across worker processes (every core).
"""
