"""Simulated nodes (kwok-like) and a small in-memory API server for tests and benchmarks."""
