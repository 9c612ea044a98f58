"""The pipeline's stages as library calls: what each CLI subcommand runs."""
