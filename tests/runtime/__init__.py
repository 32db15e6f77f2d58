"""Tests of mmsearch.services.runtime (the gRPC server factory every service uses)."""
