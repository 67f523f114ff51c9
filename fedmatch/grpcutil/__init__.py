"""gRPC plumbing shared by every party: server and channel factories, error translation.

- :mod:`~fedmatch.grpcutil.server`: the one factory for servers and for channels (message
  bounds, keepalive, health, graceful stop);
- :mod:`~fedmatch.grpcutil.errors`: the translator from domain errors to status codes, with
  sanitized messages;
- :mod:`~fedmatch.grpcutil.auth`: the authenticated caller of a call (role, member state);
- :mod:`~fedmatch.grpcutil.metrics`: the interceptor that counts calls and their latency.

Imports only the shared top-level modules and the generated stubs; imported by every room
that serves or calls over gRPC.
"""
