"""One member state's node: its record store, encrypted search service and gRPC server."""
