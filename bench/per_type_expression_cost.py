"""Time, file size and memory of the per-type expression export (``export/per_type_expression.py``).

    .venv/bin/python bench/per_type_expression_cost.py                          # 200,000 bins x 5,000 x 30
    .venv/bin/python bench/per_type_expression_cost.py --dataset hd_20000x5000x30
    PYTHONPATH=<checkout>/src .venv/bin/python bench/per_type_expression_cost.py --out /tmp/before.h5ad --keep
    .venv/bin/python bench/per_type_expression_cost.py --compare /tmp/before.h5ad   # same layers?

The slide comes from ``bench/run_scale.py`` (run it first); bins without counts are dropped as the mapping
does. Abundances are random (seeded), m_g and the ambient term constants: the cost depends on the counts'
non-zeros and the number of types, not on the values. It prints the seconds of the export (the allocation
alone too, without writing), the file's size and how far resident memory rose. ``--compare`` reads both files
layer by layer and prints the largest difference of the values and whether the sparsity patterns agree.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

import cell2location_nf
from cell2location_nf.export import per_type_expression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slide_cost import ResidentMemory, read_slide, slide_parser  # noqa: E402


def main() -> None:
    parser = slide_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/per_type_expression_cost.h5ad"))
    parser.add_argument("--keep", action="store_true", help="Keep the written file (deleted by default).")
    parser.add_argument("--compare", type=Path, help="Another version's file to compare layer by layer.")
    args = parser.parse_args()

    data = args.workdir / args.dataset
    slide = read_slide(args)
    counts = slide.X
    signatures = pd.read_csv(data / "signatures.csv", index_col=0).loc[slide.var_names]
    n_bins, n_types = slide.n_obs, signatures.shape[1]
    rng = np.random.default_rng(0)
    w_sf = rng.gamma(0.5, 2.0, size=(n_bins, n_types)).astype(np.float32)
    m_g = np.ones((1, slide.n_vars), np.float32)
    s_eg = np.full((1, slide.n_vars), 0.01, np.float32)
    batch_codes = np.zeros(n_bins, np.int64)
    obs = pd.DataFrame({"barcode": slide.obs_names.to_numpy(), "sample": "hd"}, index=slide.obs_names)
    inputs = (counts, w_sf, signatures.to_numpy().T, m_g, s_eg, batch_codes)  # float64, as the mapping

    start = time.perf_counter()
    for _ in per_type_expression.allocation_chunks(*inputs):
        pass
    allocation_s = time.perf_counter() - start

    with ResidentMemory() as memory:
        start = time.perf_counter()
        per_type_expression.write_per_type_expression(args.out, *inputs, obs, slide.var[[]], list(signatures.columns))
        seconds = time.perf_counter() - start
    print(f"code: {Path(cell2location_nf.__file__).parent}")
    print(f"{args.dataset}: {n_bins} bins, {counts.nnz} non-zeros, {n_types} types")
    print(f"allocation alone: {allocation_s:.1f} s; export: {seconds:.1f} s; "
          f"file {args.out.stat().st_size / 1e9:.2f} GB")
    print(memory.report("the export"))
    if args.compare:  # layer by layer, so that two 200,000-bin files need not fit in memory at once
        largest, same_pattern = 0.0, True
        with h5py.File(args.out, "r") as mine, h5py.File(args.compare, "r") as other:
            assert list(mine["layers"]) == list(other["layers"]), "different layers"
            for name in mine["layers"]:
                a, b = mine["layers"][name], other["layers"][name]
                same_pattern &= all(np.array_equal(a[k][:], b[k][:]) for k in ("indices", "indptr"))
                largest = max(largest, float(np.abs(a["data"][:] - b["data"][:]).max(initial=0.0)))
        print(f"against {args.compare}: largest difference {largest:g}, same indices and indptr: {same_pattern}")
    if not args.keep:
        args.out.unlink()


if __name__ == "__main__":
    main()
