"""One bootstrap shared by every service: settings, logging, gRPC server, health, metrics, codec."""
