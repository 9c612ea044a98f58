"""Input preparation: count checks, gene matching, mitochondrial genes and the reference gene filter."""
