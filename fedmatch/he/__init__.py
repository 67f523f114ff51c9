"""Homomorphic encryption: the only package that imports tenseal.

Public surface:

- :mod:`fedmatch.he.params`: named, 128-bit secure parameter sets;
- :mod:`fedmatch.he.keys`: the requester's key pair and its public bundle;
- :mod:`fedmatch.he.engine`: the node-side search engine interface and its first
  implementation (packed diagonals, rotations shared across blocks).
"""
