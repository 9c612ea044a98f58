"""cell2location re-implemented in torch + pyro, with the inputs a Nextflow pipeline feeds it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cell2location-nf")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
