"""Validate pipeline parameters and the samplesheet against the JSON schemas before any heavy task."""
