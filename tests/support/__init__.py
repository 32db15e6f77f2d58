"""Helpers shared by tests and benchmarks (imported, never collected): ports, an event loop in a
thread, service processes, and the preprocess + serving stack. Pytest fixtures live in
tests/fixtures/ and build on these."""
