"""Side-by-side mapping benchmark: our cell2location vs upstream cell2location 0.1.5 on the same data.

    .venv/bin/python bench/run_benchmark.py --seeds 0 1                 # ours (defaults) and upstream (defaults)
    .venv/bin/python bench/run_benchmark.py --grid 25 40 --n-genes 3000 --n-types 20 --tools ours
    .venv/bin/python bench/run_benchmark.py --tools ours --label _upstream_schedule --our-args="--schedule upstream"

Data: cell2location_nf.simulate.benchmark_data (spots summed from held-out reference cells). Both tools map
with the same signatures (our stage 1 on the reference half), the same N and detection_alpha, on the same
machine with the same thread count, each at its own defaults unless told otherwise (ours: the 'fast'
schedule; upstream: 30,000 full-batch epochs). Prints wall time (training plus export, process start to
exit), peak RSS and accuracy metrics (cell2location_nf.benchmark.metrics) per tool and seed, the
upstream/ours wall-time ratio per seed, and writes them as JSON next to the data.

Each run leaves ``result.json`` in its folder; an upstream run whose folder already holds one for the same
seed, epochs and threads is reused (upstream's output does not depend on our code; a 30,000-epoch run
takes over an hour here) unless ``--rerun-upstream`` is given. Reused rows are marked in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil

from cell2location_nf.benchmark.metrics import score
from cell2location_nf.inference import allocator
from cell2location_nf.simulate.benchmark_data import BenchmarkConfig, make_benchmark_data

HERE = Path(__file__).resolve().parent
# upstream's interpreter: bench/.venv-upstream (setup_upstream.sh), or another one named by this variable
UPSTREAM_PYTHON = Path(os.environ.get("C2L_BENCH_UPSTREAM_PYTHON", HERE / ".venv-upstream" / "bin" / "python"))
OURS = [sys.executable, "-m", "cell2location_nf"]
UPSTREAM_DEFAULT_EPOCHS = 30000
METRIC_COLUMNS = ["pearson_all", "pearson_per_type", "rmse_proportions", "jsd_mean", "jsd_median", "aupr_presence",
                  "absolute_scale"]


def available_tools(tools: list[str]) -> list[str]:
    """``tools`` without upstream when its environment is absent (the benchmark then runs ours only)."""
    if "upstream" in tools and not UPSTREAM_PYTHON.exists():
        print("upstream environment missing (bash bench/setup_upstream.sh); running ours only", file=sys.stderr)
        return [t for t in tools if t != "upstream"]
    return tools


def gpu_memory_used_mib() -> float | None:
    """Memory in use on the first GPU (MiB, from nvidia-smi), or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class ToolFailedError(RuntimeError):
    """A measured command exited non-zero; ``cost`` holds its wall time and peak memory up to then."""

    def __init__(self, message: str, returncode: int, cost: dict[str, float]) -> None:
        super().__init__(message)
        self.returncode, self.cost = returncode, cost


def run_measured(cmd: list[str], log_path: Path, threads: int, gpu: bool = False) -> dict[str, float]:
    """Run a command and measure its peak RSS; returns wall seconds and peak MiB.

    The peak is the larger of the process tree's RSS summed every 0.5 s (compile or loader workers
    included) and the kernel's high-water mark of the command's largest process, which a short spike
    between two samples cannot escape (``ru_maxrss`` from ``wait4``, taken by a small spawner process:
    see ``SPAWN_AND_REPORT``). ``peak_rss_where`` says which: the largest sample's time and processes, or the
    high-water mark above it (a spike between samples); every sample is written to ``rss_samples.tsv`` beside
    the log, so that a peak can be matched to the log's phases.
    With ``gpu``, also the peak GPU memory it added (nvidia-smi's memory in use minus that before the start).
    Raises ToolFailedError (with the cost so far) when the command fails, e.g. when the kernel kills it for memory.
    Each command compiles from nothing, as a task on a fresh machine does: torch.compile's cache is a new empty
    folder, removed afterwards (unless TORCHINDUCTOR_CACHE_DIR is set here, or ours gets --compile-cache-dir).
    """
    with cold_compile_cache() as cache_env:
        return _run_measured(cmd, log_path, threads, gpu, cache_env)


@contextmanager
def cold_compile_cache():
    """Environment for a command that starts with an empty torch.compile cache (see :func:`run_measured`)."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="c2l-bench-compile-cache-") as folder:
        yield {"TORCHINDUCTOR_CACHE_DIR": folder}


# Runs the measured command as its own child and writes that child's ru_maxrss (KiB) to a file. A process keeps the
# high-water mark of the memory it had before exec, and a command forked from the harness starts with the harness's
# pages (hundreds of MB to GB once it has scored runs or made data), so the harness's own wait4 reported those too.
# Forked from this small process instead, the command's high-water mark is its own.
SPAWN_AND_REPORT = """
import os, signal, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        print(f"cannot run {argv[0]}: {err}", file=sys.stderr, flush=True)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:  # die of the same signal, so that the harness sees it (e.g. -9 from the out-of-memory killer)
    if -code != signal.SIGKILL:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def pipeline_task_env(cmd: list[str]) -> dict[str, str]:
    """The malloc setting the pipeline's tasks start with (nextflow.config, ``env``), for our commands.

    Only where the package being measured has it (a checkout of older code on PYTHONPATH is measured as it
    ran then) and the caller set no GLIBC_TUNABLES of their own.
    """
    tcache_off = getattr(allocator, "TCACHE_OFF", None)
    if cmd[: len(OURS)] != OURS or tcache_off is None or "GLIBC_TUNABLES" in os.environ:
        return {}
    return {"GLIBC_TUNABLES": tcache_off}


def _run_measured(cmd: list[str], log_path: Path, threads: int, gpu: bool, cache_env: dict) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               **cache_env, **pipeline_task_env(cmd))
    gpu_base = gpu_memory_used_mib() if gpu else None
    start, largest, high_water, gpu_peak = time.perf_counter(), RssSample(0.0, []), 0, 0.0
    with log_path.open("w") as log, log_path.with_name("rss_samples.tsv").open("w") as samples:
        samples.write("seconds\ttotal_mib\tprocesses (name:MiB, largest first)\n")
        report = log_path.with_name("high_water_kib.txt")
        report.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", SPAWN_AND_REPORT, str(report), *cmd], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        spawner = psutil.Process(proc.pid)
        while proc.poll() is None:
            sample = sample_process_tree(spawner, time.perf_counter() - start)
            samples.write(sample.tsv_row())
            largest = max(largest, sample, key=lambda s: s.total)
            if gpu_base is not None:
                gpu_peak = max(gpu_peak, (gpu_memory_used_mib() or gpu_base) - gpu_base)
            time.sleep(0.5)
        if report.exists():
            high_water = int(report.read_text()) * 1024  # Linux reports KiB
            report.unlink()
    peak = max(largest.total, high_water)
    cost = {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak / 2**20, 1),
            "peak_rss_where": peak_source(largest, high_water)}
    if gpu_base is not None:
        cost["peak_gpu_mib"] = round(gpu_peak)
    if proc.returncode != 0:
        raise ToolFailedError(f"{cmd[:4]} failed (exit {proc.returncode}); see {log_path}", proc.returncode, cost)
    return cost


@dataclass
class RssSample:
    """The process tree's resident memory at one moment: seconds since the start and (name, bytes) per process."""

    seconds: float
    processes: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(rss for _, rss in self.processes)

    def describe(self, limit: int = 4) -> str:
        return " + ".join(f"{name} {rss / 2**20:,.0f}" for name, rss in self.processes[:limit])

    def tsv_row(self) -> str:
        named = " ".join(f"{name.replace(' ', '_')}:{rss / 2**20:.0f}" for name, rss in self.processes)
        return f"{self.seconds:.1f}\t{self.total / 2**20:.0f}\t{named}\n"


def sample_process_tree(spawner: psutil.Process, seconds: float) -> RssSample:
    """RSS of every descendant of ``spawner`` alive now (the command and its children; not the small spawner itself),
    largest first (a process that exits meanwhile is skipped)."""
    processes = []
    try:
        tree = spawner.children(recursive=True)
    except psutil.Error:
        tree = []
    for process in tree:
        try:
            processes.append((process.name(), process.memory_info().rss))
        except psutil.Error:
            pass
    return RssSample(seconds, sorted(processes, key=lambda p: -p[1]))


def peak_source(largest: RssSample, high_water: int) -> str:
    """Where the peak came from, in MiB: the largest sample of the tree, or the kernel's high-water mark above it."""
    sample = f"largest sample at {largest.seconds:.1f} s: {largest.describe() or 'none'}"
    if high_water > largest.total:
        return f"kernel high-water mark of one process, {high_water / 2**20:,.0f}, between samples ({sample})"
    return sample


def read_truth(data: Path, samples: list[str]) -> pd.DataFrame:
    """True cells of each type per spot, all samples of a benchmark set."""
    return pd.concat([pd.read_csv(data / "truth" / f"{s}.csv", index_col=0) for s in samples])


def mean_cells_per_spot(truth: pd.DataFrame) -> float:
    """N given to both tools: the mean true cells per spot, to one decimal."""
    return round(float(truth.sum(axis=1).mean()), 1)


def failed_row(tool: str, seed: int, args: argparse.Namespace, cost: dict[str, float], why: str,
               epochs: int | None) -> dict:
    """A results row for a run that gave no estimates: its cost up to the end, no metrics."""
    return {"tool": tool, "seed": seed, "threads": args.threads, "device": args.device, **cost, "failed": why,
            "reused": False, "epochs": epochs, "wall_s_default": float("nan")}


def estimate_table(folder: Path, sample: str, kind: str) -> Path:
    """Where both tools' runs leave one sample's abundance estimates (``kind``: means or q05)."""
    return folder / f"{sample}.cell_abundance_{kind}.csv"


def missing_estimates(folder: Path, samples: list[str]) -> list[Path]:
    """The estimate tables a finished run should have left in ``folder`` but did not."""
    wanted = [estimate_table(folder, s, kind) for s in samples for kind in ("means", "q05")]
    return [path for path in wanted if not path.exists()]


def read_estimates(folder: Path, samples: list[str], kind: str, ours: bool) -> pd.DataFrame:
    tables = []
    for sample in samples:
        table = pd.read_csv(estimate_table(folder, sample, kind), index_col=0)
        if ours:
            table = table.set_index("barcode")
        tables.append(table)
    return pd.concat(tables)


def markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def run_tool(tool: str, cmd: list[str], out: Path, seed: int, threads: int, reuse: bool,
             device: str = "cpu") -> dict:
    """Run one tool once (or reuse its earlier result.json) and return its row."""
    saved = out / "result.json"
    if reuse and saved.exists():
        row = json.loads(saved.read_text())
        if row.get("threads") == threads:
            return {**row, "reused": True}
    out.mkdir(parents=True, exist_ok=True)
    print(f"running {out.name} ...", file=sys.stderr, flush=True)
    cost = run_measured(cmd, out / "log.txt", threads, gpu=device == "cuda")
    row = {"tool": tool, "seed": seed, "threads": threads, "device": device, **cost,
           "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(cmd)}
    saved.write_text(json.dumps(row, indent=2))
    return {**row, "reused": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tools", nargs="+", default=["ours", "upstream"], choices=["ours", "upstream"])
    parser.add_argument("--epochs", type=int, default=None, help="Override our mapping epochs (default: our schedule).")
    parser.add_argument("--upstream-epochs", type=int, default=UPSTREAM_DEFAULT_EPOCHS,
                        help="Upstream mapping epochs (default: its default; fewer: its wall time is extrapolated).")
    parser.add_argument("--our-args", default="", help="Extra options for our map-spatial (e.g. --schedule upstream).")
    parser.add_argument("--label", default="", help="Suffix naming this configuration of our tool (with --our-args).")
    parser.add_argument("--n-genes", type=int, default=1000)
    parser.add_argument("--n-types", type=int, default=12)
    parser.add_argument("--grid", type=int, nargs=2, default=[20, 20], help="Spots per sample (rows cols).")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--upstream-export-batch", type=int, default=None,
                        help="Locations per batch in upstream's export (default: all at once, as its tutorial "
                             "does; its library default is 2048).")
    parser.add_argument("--rerun-upstream", action="store_true", help="Run upstream even if a result exists.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="Where both tools train and export (cuda: the first GPU; result folders end in _cuda).")
    args = parser.parse_args()
    where = "" if args.device == "cpu" else f"_{args.device}"

    cfg = BenchmarkConfig(n_genes=args.n_genes, n_types=args.n_types, grid=tuple(args.grid), n_samples=args.samples)
    name = f"{cfg.grid[0] * cfg.grid[1] * cfg.n_samples}x{cfg.n_genes}x{cfg.n_types}"
    data = args.workdir / name
    if not (data / "reference.h5ad").exists():
        make_benchmark_data(data, cfg)
    samples = [f"sample_{s + 1}" for s in range(cfg.n_samples)]
    spatial = [str(data / f"{s}.h5ad") for s in samples]
    truth = read_truth(data, samples)
    n_cells = mean_cells_per_spot(truth)
    signatures = data / "signatures" / "reference.signatures.csv"
    if not signatures.exists():
        (data / "signatures").mkdir(exist_ok=True)
        run_measured([*OURS, "train-reference", "--reference", str(data / "reference.h5ad"), "--batch-key", "batch",
                      "--device", args.device, "--outdir", str(data / "signatures")],
                     data / "signatures" / "log.txt", args.threads)
    args.tools = available_tools(args.tools)
    results = []
    for seed in args.seeds:
        for tool in args.tools:
            common = ["--signatures", str(signatures), "--n-cells-per-location", str(n_cells),
                      "--num-samples", str(args.num_samples), "--seed", str(seed)]
            if tool == "ours":
                name_ = f"ours{args.label}"
                epochs = ["--max-epochs", str(args.epochs)] if args.epochs else []
                out = data / (f"{name_}{where}_seed{seed}" + (f"_epochs{args.epochs}" if args.epochs else ""))
                cmd = [*OURS, "map-spatial", *common, *epochs, "--outdir", str(out), "--device", args.device,
                       *args.our_args.split(), *spatial]
            else:
                name_ = "upstream"
                batch = args.upstream_export_batch
                out = data / (f"upstream{where}_seed{seed}_epochs{args.upstream_epochs}"
                              + (f"_export{batch}" if batch else ""))
                cmd = [str(UPSTREAM_PYTHON), str(HERE / "upstream_map.py"), *common, "--max-epochs",
                       str(args.upstream_epochs), "--accelerator", "gpu" if args.device == "cuda" else "cpu",
                       *(["--export-batch-size", str(batch)] if batch else []), "--outdir", str(out), *spatial]
            epochs_asked = args.epochs if tool == "ours" else args.upstream_epochs
            try:
                row = run_tool(name_, cmd, out, seed, args.threads,
                               reuse=tool == "upstream" and not args.rerun_upstream, device=args.device)
            except ToolFailedError as failure:
                # keep going: a tool that runs out of memory is a result, and the other rows still count
                killed = " (SIGKILL: the kernel's out-of-memory killer, usually)" if failure.returncode == -9 else ""
                print(f"{failure}{killed}; peak RSS {failure.cost['peak_rss_mib']:.0f} MiB "
                      f"({failure.cost['peak_rss_where']})",
                      file=sys.stderr, flush=True)
                results.append(failed_row(name_, seed, args, failure.cost, f"exit {failure.returncode}", epochs_asked))
                print(json.dumps(results[-1]), flush=True)
                continue
            missing = missing_estimates(out, samples)
            if missing:
                # upstream (PyTorch Lightning) exits 0 when stopped by SIGTERM, e.g. by a session's end
                print(f"{name_} exited without {missing[0].name} in {out} (stopped?); see {out / 'log.txt'}",
                      file=sys.stderr, flush=True)
                cost = {k: row[k] for k in ("wall_s", "peak_rss_mib", "peak_rss_where", "peak_gpu_mib") if k in row}
                (out / "result.json").unlink(missing_ok=True)  # never reuse a stopped run
                results.append(failed_row(name_, seed, args, cost, "no output", epochs_asked))
                print(json.dumps(results[-1]), flush=True)
                continue
            row["epochs"] = _epochs_run(out) if tool == "ours" else args.upstream_epochs
            row["wall_s_default"] = row["wall_s"] if tool == "ours" else upstream_wall_at_default(
                row["wall_s"], out / "log.txt", args.upstream_epochs)
            metrics = score(truth, read_estimates(out, samples, "means", tool == "ours"),
                            read_estimates(out, samples, "q05", tool == "ours"))
            results.append({**row, **metrics})
            print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    upstream = table[table["tool"] == "upstream"].set_index("seed")["wall_s_default"]
    table["speed-up"] = [upstream.get(r.seed, float("nan")) / r.wall_s if r.tool != "upstream" else 1.0
                         for r in table.itertuples()]
    tag = f"{'-'.join(args.tools)}{args.label}_seeds{'-'.join(map(str, args.seeds))}" + (
        f"_epochs{args.epochs}" if args.epochs else "")
    (data / f"results_{tag}.json").write_text(table.to_json(orient="records", indent=2))
    print(f"\nDataset {name} (spots x genes x types), N = {n_cells}, threads = {args.threads}, "
          f"device = {args.device}\n")
    if args.upstream_epochs != UPSTREAM_DEFAULT_EPOCHS and "upstream" in args.tools:
        print(f"Upstream ran {args.upstream_epochs} epochs; wall_s_default extrapolates its wall time to its "
              f"default {UPSTREAM_DEFAULT_EPOCHS} (start-up and export as measured, training per epoch as measured); "
              "speed-up is against that.\n")
    gpu = ["peak_gpu_mib"] if "peak_gpu_mib" in table else []
    failed = ["failed"] if "failed" in table else []
    if failed:
        table["failed"] = table["failed"].fillna("")
    columns = ["tool", "seed", "epochs", "reused", *failed, "wall_s", "wall_s_default", "speed-up", "peak_rss_mib",
               *gpu, *(c for c in METRIC_COLUMNS if c in table)]
    print(markdown_table(table[columns]))


def upstream_wall_at_default(wall_s: float, log: Path, epochs: int) -> float:
    """Upstream's wall time at its default epochs: measured when it ran them, else extrapolated.

    The extrapolation keeps the measured start-up and export (wall time minus the training time that
    upstream_map.py prints) and scales the training time by ``UPSTREAM_DEFAULT_EPOCHS / epochs``.
    """
    if epochs == UPSTREAM_DEFAULT_EPOCHS:
        return wall_s
    found = re.search(r"upstream training: ([0-9.]+) s", log.read_text())
    if found is None:
        raise RuntimeError(f"{log} holds no 'upstream training: ... s' line to extrapolate from")
    training = float(found.group(1))
    return round(wall_s - training + training * UPSTREAM_DEFAULT_EPOCHS / epochs, 1)


def _epochs_run(out: Path) -> int:
    """Epochs our run actually trained (from its training summary)."""
    summary = next(out.glob("*.training_summary.json"), None)
    return json.loads(summary.read_text())["epochs"] if summary else -1


if __name__ == "__main__":
    main()
