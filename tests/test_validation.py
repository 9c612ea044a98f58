"""Parameter and samplesheet validation: every problem named, all reported together, before heavy work."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import pytest

from cell2location_nf.errors import InputError
from cell2location_nf.validation.inputs import validate_inputs, write_validated_samplesheet

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_SCHEMA = ROOT / "nextflow_schema.json"
INPUT_SCHEMA = ROOT / "assets" / "schema_input.json"


def _params(test_data: Path, sheet: Path, **extra) -> dict:
    params = {
        "input": str(sheet), "reference": str(test_data / "reference.h5ad"), "outdir": "results",
        "labels_key": "cell_type", "batch_key": "batch", "categorical_covariate_keys": "chemistry",
        "reference_layer": None, "gene_match": "auto", "hd_bin_size": 8, "n_cells_per_location": 30,
        "publish_dir_mode": "copy", "help": False, "validate_params": True,
    }
    params.update(extra)
    return params


def _sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "samplesheet.csv"
    path.write_text(text)
    return path


def _validate(params: dict, base_dir: Path):
    return validate_inputs(params, PIPELINE_SCHEMA, INPUT_SCHEMA, base_dir)


def _errors(params: dict, base_dir: Path) -> str:
    with pytest.raises(InputError) as err:
        _validate(params, base_dir)
    return str(err.value)


def test_valid_inputs_pass_and_paths_become_absolute(test_data, tmp_path):
    sheet = _sheet(tmp_path, "sample,spaceranger_dir,n_cells_per_location\n"
                             f"s1,{test_data}/sample_1/outs,8\ns2,{test_data}/sample_2/outs,\n")
    rows = _validate(_params(test_data, sheet), tmp_path)
    assert [r["sample"] for r in rows] == ["s1", "s2"]
    assert rows[0]["n_cells_per_location"] == 8.0 and "n_cells_per_location" not in rows[1]
    out = write_validated_samplesheet(rows, tmp_path / "validated.csv")
    assert out.read_text().splitlines()[0] == "sample,spaceranger_dir,h5ad,batch,n_cells_per_location,hd_bin_size"


def test_relative_paths_resolve_against_the_launch_directory(test_data, tmp_path):
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\ns1,sample_1/outs\n")
    rows = _validate(_params(test_data, sheet), test_data)
    assert rows[0]["spaceranger_dir"] == str(test_data / "sample_1" / "outs")


def test_missing_samplesheet_column(test_data, tmp_path):
    sheet = _sheet(tmp_path, f"name,spaceranger_dir\ns1,{test_data}/sample_1/outs\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert f"samplesheet '{sheet}' has no column 'sample' (columns found: name, spaceranger_dir)" in message


def test_path_that_does_not_exist(test_data, tmp_path):
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\ns1,/no/such/outs\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert "line 2 (sample 's1'): column 'spaceranger_dir': path '/no/such/outs' does not exist" in message


def test_duplicate_sample_ids(test_data, tmp_path):
    sheet = _sheet(tmp_path, f"sample,spaceranger_dir\ns1,{test_data}/sample_1/outs\ns1,{test_data}/sample_2/outs\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert "line 3 (sample 's1'): duplicate sample='s1': also used in entry 1" in message


def test_exactly_one_of_spaceranger_dir_or_h5ad(test_data, tmp_path):
    sheet = _sheet(tmp_path, f"sample,spaceranger_dir,h5ad\ns1,,\ns2,{test_data}/sample_1/outs,"
                             f"{test_data}/reference.h5ad\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert message.count("give exactly one of the columns spaceranger_dir or h5ad") == 2


def test_unknown_and_invalid_parameters(test_data, tmp_path):
    sheet = _sheet(tmp_path, f"sample,spaceranger_dir\ns1,{test_data}/sample_1/outs\n")
    params = _params(test_data, sheet, labels_kee="cell_type", gene_match="fuzzy", hd_bin_size=5)
    del params["outdir"]
    message = _errors(params, tmp_path)
    assert "unknown parameter '--labels_kee'; did you mean '--labels_key'?" in message
    assert "parameter '--gene_match': 'fuzzy' is not one of ['auto', 'ensembl', 'symbol']" in message
    assert "parameter '--hd_bin_size': 5 is not one of [2, 8, 16]" in message
    assert "parameter '--outdir' is required" in message
    assert "(4 problems)" in message  # all reported together


def test_missing_label_column(test_data, tmp_path):
    sheet = _sheet(tmp_path, f"sample,spaceranger_dir\ns1,{test_data}/sample_1/outs\n")
    message = _errors(_params(test_data, sheet, labels_key="celltype", batch_key="donor"), tmp_path)
    assert "obs column 'celltype' (from --labels_key) does not exist; available columns: cell_type, batch" in message
    assert "obs column 'donor' (from --batch_key) does not exist" in message


def test_spaceranger_folder_without_positions(test_data, tmp_path):
    outs = tmp_path / "outs"
    shutil.copytree(test_data / "sample_1" / "outs", outs)
    (outs / "spatial" / "tissue_positions_list.csv").unlink()
    sheet = _sheet(tmp_path, f"sample,spaceranger_dir\ns1,{outs}\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert f"line 2 (sample 's1'): Space Ranger folder '{outs}' has no spot positions" in message


def test_no_shared_genes(test_data, tmp_path):
    spatial = ad.read_h5ad(test_data / "reference.h5ad")[:20].copy()
    spatial.var_names = [f"mouse_{g}" for g in spatial.var_names]
    spatial.var = spatial.var.drop(columns="gene_ids")
    spatial.obsm["spatial"] = spatial.X[:, :2].toarray()
    spatial.write_h5ad(tmp_path / "mouse.h5ad")
    sheet = _sheet(tmp_path, f"sample,h5ad\nm1,{tmp_path / 'mouse.h5ad'}\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert "No genes are shared between reference" in message and "mouse.h5ad" in message


def test_bad_values_in_optional_columns(test_data, tmp_path):
    sheet = _sheet(tmp_path, "sample,spaceranger_dir,n_cells_per_location,batch\n"
                             f"bad id,{test_data}/sample_1/outs,many,b 1\n")
    message = _errors(_params(test_data, sheet), tmp_path)
    assert "column 'sample': 'bad id' does not match" in message
    assert "column 'n_cells_per_location': 'many' is not of type 'number'" in message
    assert "column 'batch'" in message
