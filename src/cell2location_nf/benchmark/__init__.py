"""Deconvolution accuracy metrics (histology_and_benchmarks §3.2)."""
