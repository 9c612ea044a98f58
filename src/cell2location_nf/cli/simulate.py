"""``make-test-data``: the synthetic data set of the test profile."""

from __future__ import annotations

import click

from ..simulate.test_data import SyntheticDataConfig, make_test_data


@click.command("make-test-data")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def make_test_data_cmd(outdir: str, seed: int) -> None:
    """Write a small reference, two Space Ranger samples, the truth and a samplesheet."""
    path = make_test_data(outdir, SyntheticDataConfig(seed=seed))
    click.echo(f"Test data written to {path} (samplesheet: {path / 'samplesheet.csv'})")
