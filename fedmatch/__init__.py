"""fedmatch: privacy-preserving federated matching for biometric registers.

This package is the protocol library shared by nodes, the coordinator, requesters and
auditors: wire contract (``rpc``), homomorphic encryption (``he``), gRPC plumbing
(``grpcutil``), domain vocabulary and the ``fedmatch`` command.
"""

__version__ = "0.1.0"
