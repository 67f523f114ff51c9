"""gRPC plumbing shared by every party: server and channel factories, error translation."""
