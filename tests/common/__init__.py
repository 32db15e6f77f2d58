"""Tests of services/common (settings, codec, gRPC server factory)."""
