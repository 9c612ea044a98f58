"""Deterministic synthetic data: the test profile's inputs and the tests' fixtures."""
