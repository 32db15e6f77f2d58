"""Tests of services.runtime (the gRPC server factory every service uses)."""
