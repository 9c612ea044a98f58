"""Command-line interface: one subcommand per pipeline step, each a thin layer over the library."""

from __future__ import annotations

import logging

import click

from .. import __version__
from ..errors import InputError
from .mapping import export_mapping_cmd, map_spatial_cmd
from .prepare import prepare_reference_cmd, prepare_spatial_cmd
from .reference import export_reference_cmd, train_reference_cmd
from .report import render_notebook_cmd, report_summary_cmd
from .simulate import make_test_data_cmd
from .validate import validate_cmd


class _Group(click.Group):
    """Turn :class:`InputError` into a plain one-message exit instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
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


cli.add_command(validate_cmd)
cli.add_command(prepare_reference_cmd)
cli.add_command(prepare_spatial_cmd)
cli.add_command(train_reference_cmd)
cli.add_command(export_reference_cmd)
cli.add_command(map_spatial_cmd)
cli.add_command(export_mapping_cmd)
cli.add_command(make_test_data_cmd)
cli.add_command(render_notebook_cmd)
cli.add_command(report_summary_cmd)


def main() -> None:
    """Console-script entry point."""
    cli()
