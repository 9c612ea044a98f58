"""Readers and writers for reference and spatial data."""
