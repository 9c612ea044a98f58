"""What the first compiled mapping step costs from an empty compile cache, and where its C++ compiling goes.

    .venv/bin/python bench/compile_cost.py                           # 800 x 1000 x 12 set, 1 thread
    .venv/bin/python bench/compile_cost.py --warm-headers DIR        # precompiled headers already in DIR
    .venv/bin/python bench/compile_cost.py --no-precompiled-headers  # inductor without them
    .venv/bin/python bench/compile_cost.py --eager-prior             # compile the likelihood pass only
    .venv/bin/python bench/compile_cost.py --cpp-wrapper             # inductor's C++ wrapper around kernels
    .venv/bin/python bench/compile_cost.py --dynamic                 # every size dynamic, as minibatches compile
    .venv/bin/python bench/compile_cost.py --no-background-header    # the header built at the first kernel

Each call is one process with a new, empty inductor cache (precompiled headers included, as training keeps
them since commit ac30ee9). It prints the first step's seconds (tracing, C++ compiling, loading), every C++
compiler call inductor made (vector-instruction probes, the header, kernels), the milliseconds of a later
step (loss and backward), and the loss, so that variants can be checked for the same values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="800x1000x12")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warm-headers", type=Path, help="a cache folder whose precompiled_headers/ to reuse")
    parser.add_argument("--no-precompiled-headers", action="store_true")
    parser.add_argument("--eager-prior", action="store_true", help="run the prior and entropy terms eagerly")
    parser.add_argument("--cpp-wrapper", action="store_true", help="inductor's cpp_wrapper mode")
    parser.add_argument("--dynamic", action="store_true", help="compile with every size dynamic (minibatch mapping)")
    parser.add_argument("--no-background-header", action="store_true",
                        help="no precompiled header started on a thread as compiling starts (as before 2026-12-07): "
                             "inductor builds it at its first kernel")
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="compile_cost_"))
    if args.warm_headers:
        shutil.copytree(args.warm_headers / "precompiled_headers", cache / "precompiled_headers")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    import torch
    import torch._inductor.config as inductor_config
    from profile_step import full_batch_step_inputs  # bench/, this script's folder
    from torch._inductor import cpp_builder

    import cell2location_nf.models.mapping_elbo as mapping_elbo
    from cell2location_nf.inference.compile import DYNAMIC, build_kernel_header_in_background, prepare_compile

    torch.set_num_threads(args.threads)
    inductor_config.cpp_cache_precompile_headers = not args.no_precompiled_headers
    inductor_config.cpp_wrapper = args.cpp_wrapper
    calls: list[tuple[float, str]] = []
    run_compile_cmd = cpp_builder.run_compile_cmd

    def timed_compile(cmd_line: str, cwd: str) -> None:
        start = time.perf_counter()
        run_compile_cmd(cmd_line, cwd)
        calls.append((time.perf_counter() - start, cmd_line.split()[1]))

    cpp_builder.run_compile_cmd = timed_compile
    if args.eager_prior:
        mapping_elbo._site_terms = lambda use_compile, *site_args: mapping_elbo.site_terms(*site_args)

    trained, step_args = full_batch_step_inputs(args.workdir / args.dataset, torch.device("cpu"))

    def step() -> float:
        loss = mapping_elbo.negative_elbo(trained.model, trained.guide, *step_args,
                                          use_compile=DYNAMIC if args.dynamic else True)
        loss.backward()
        return loss.item()

    start = time.perf_counter()
    prepare_compile(torch.device("cpu"))  # as training does: headers with the cache, the ISA probe started
    if not args.no_background_header:
        build_kernel_header_in_background()  # as training does when it starts compiling
    step()
    first = time.perf_counter() - start
    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(200):
        loss = step()
    per_step = (time.perf_counter() - start) / 200 * 1000
    print(f"{args.dataset}, {args.threads} thread(s), cache {cache}")
    print(f"first compiled step {first:.1f} s; C++ compiler: {len(calls)} calls, {sum(t for t, _ in calls):.1f} s")
    for seconds, source in calls:
        size = Path(source).stat().st_size if Path(source).is_file() else 0
        print(f"  {seconds:5.2f} s  {Path(source).name[:24]}  {size:,} bytes")
    print(f"later steps {per_step:.2f} ms (loss and backward); loss after 221 steps {loss!r}")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
