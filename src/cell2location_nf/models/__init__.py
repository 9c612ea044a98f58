"""The cell2location models in pyro: reference signatures (NB regression) and spatial mapping."""
