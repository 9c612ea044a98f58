"""Allow ``python -m cell2location_nf``."""

from .cli import main

main()
