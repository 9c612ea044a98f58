"""Command-line interface: one subcommand per pipeline step, each a thin layer over the library."""

from __future__ import annotations

import importlib
import logging

import click

from .. import __version__
from ..errors import InputError, TrainingDivergedError
from ..inference.allocator import request_huge_pages

# Subcommand -> (module, attribute). Modules load when their command runs, so a step imports only what it
# uses (the whole set, with torch, scanpy and papermill, takes seconds to import in every task).
COMMANDS = {
    "validate": ("validate", "validate_cmd"),
    "prepare-reference": ("prepare", "prepare_reference_cmd"),
    "prepare-spatial": ("prepare", "prepare_spatial_cmd"),
    "train-reference": ("reference", "train_reference_cmd"),
    "export-reference": ("reference", "export_reference_cmd"),
    "map-spatial": ("mapping", "map_spatial_cmd"),
    "export-mapping": ("mapping", "export_mapping_cmd"),
    "make-test-data": ("simulate", "make_test_data_cmd"),
    "render-notebook": ("report", "render_notebook_cmd"),
    "report-summary": ("report", "report_summary_cmd"),
}


class _Group(click.Group):
    """Lazy subcommands (:data:`COMMANDS`); :class:`InputError` and a diverged training exit with one message."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (InputError, TrainingDivergedError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="cell2location-nf")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def cli(verbose: int) -> None:
    """cell2location-nf: reference signatures and spatial mapping of cell types."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console-script entry point (``cell2location-nf``, ``python -m cell2location_nf``)."""
    request_huge_pages()  # before a subcommand imports torch
    cli()
