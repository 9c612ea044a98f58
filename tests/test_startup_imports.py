"""A task's start: the commands that .h5ad inputs reach do not import scanpy (about 1.5 s of every start).

scanpy is only needed to read a 10x HDF5 matrix and to draw over a histology image; those import it where
they use it (io/spaceranger.py, plots/mapping_qc.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["prepare", "reference", "mapping"])
def test_commands_start_without_scanpy(command):
    probe = f"import sys, cell2location_nf.cli.{command}; print('scanpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_reading_a_10x_matrix_still_reaches_scanpy(tmp_path):
    """The lazy import is live: in a fresh process the 10x HDF5 reader imports scanpy and calls it (which fails
    on a file that is no HDF5 with h5py's OSError, not a NameError)."""
    bogus = tmp_path / "filtered_feature_bc_matrix.h5"
    bogus.write_text("not hdf5")
    probe = ("import sys\nfrom pathlib import Path\nfrom cell2location_nf.io.spaceranger import read_matrix\n"
             "before = 'scanpy' in sys.modules\n"
             f"try:\n    read_matrix(Path({str(bogus)!r}))\nexcept OSError:\n    pass\n"
             "print(before, 'scanpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
