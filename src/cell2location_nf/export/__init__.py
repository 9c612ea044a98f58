"""Posterior summaries and the AnnData/CSV outputs built from them."""
