"""torch.compile with an eager fallback, shared by every compiled piece of the objective."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

# Compile in this process: a pool of compile workers costs seconds to start and stop, and our few small
# graphs are compiled once per run (or read from inductor's on-disk cache). An explicit setting wins.
USER_SET_COMPILE_THREADS = "TORCHINDUCTOR_COMPILE_THREADS" in os.environ
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

log = logging.getLogger(__name__)

GPU_COMPILE_THREADS = 8  # a cap: the objective has a few dozen kernels, and each worker is a process


def compile_threads_for(device: torch.device) -> int:
    """Compile workers for ``device``: on CUDA, Triton compiles each kernel for seconds (8 workers took
    18.5 s off a fresh machine's 147.6 s run, bench/RESULTS.md "GPU"); on CPU one (see above). The user's wins."""
    if USER_SET_COMPILE_THREADS or device.type != "cuda":
        return int(os.environ["TORCHINDUCTOR_COMPILE_THREADS"])
    return max(1, min(GPU_COMPILE_THREADS, len(os.sched_getaffinity(0))))


def prepare_compile(device: torch.device) -> None:
    """Set inductor's compile workers for the device that training runs on (before its first compile), and
    keep its precompiled C++ headers with the rest of the compile cache."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = compile_threads_for(device)
    keep_precompiled_headers_with_cache()
    if device.type == "cpu":
        probe_cpu_isa_in_background()


def keep_precompiled_headers_with_cache() -> Path | None:
    """Point inductor's precompiled C++ headers (CPU kernels) at the compile cache folder, and return it.

    torch keeps them in ``/tmp/torchinductor_<user>/precompiled_headers`` whatever ``TORCHINDUCTOR_CACHE_DIR``
    says, so a fresh container built them again (about 7 s of a CPU mapping, bench/RESULTS.md "Precompiled
    headers") even with the compile cache warm. The folder is a private detail of inductor's; without it
    nothing changes.
    """
    from torch._inductor import codecache
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    if not hasattr(codecache, "_HEADER_DIR") or not hasattr(codecache, "_HEADER_LOCK_DIR"):
        return None
    headers = Path(cache_dir()) / "precompiled_headers"
    codecache._HEADER_DIR = str(headers)
    codecache._HEADER_LOCK_DIR = str(headers / "locks")
    return headers


def probe_cpu_isa_in_background() -> threading.Thread | None:
    """Start inductor's probe of the CPU's vector instructions on a thread, and return it.

    On an empty cache the probe compiles and loads a test program per instruction set (about 7 s of C++
    compiling on two cores); started before the first graph is traced, it runs while Python traces and
    lowers. Inductor's own call waits on the probe's file lock, then reads its result: the same choice.
    """
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        return None
    # on failure inductor's own call probes again and reports it
    return _start_in_background("inductor-isa-probe", "probe of the CPU's vector instructions", pick_vec_isa)


def build_kernel_header_in_background() -> threading.Thread | None:
    """Start building inductor's precompiled C++ header for CPU kernels on a thread, and return it.

    Called when training starts compiling: Python then traces and lowers the objective on one core whatever the
    thread setting, and the header (about 9 s of one compiler on an empty cache) is otherwise built only at the
    first kernel, after the tracing. Started earlier, with the probe, it took a core from the warm start
    (bench/RESULTS.md, "The header built in the background"). With a warm cache the file is there and nothing runs.
    """
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        return None
    # pick_vec_isa: the probe's result, or waits on it; on failure inductor builds the header at its first kernel
    return _start_in_background("inductor-header", "build of inductor's precompiled header",
                                lambda: build_kernel_header(pick_vec_isa()))


def _start_in_background(name: str, what: str, work: Callable[[], object]) -> threading.Thread:
    """Run ``work`` on a daemon thread; a failure is only logged (inductor repeats the work itself)."""

    def run() -> None:
        try:
            work()
        except Exception as err:
            log.debug("background %s failed: %s", what, err)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def build_kernel_header(vec_isa) -> str | None:
    """Build inductor's precompiled header for CPU kernels, as its first kernel compile would, and return its path.

    The arguments mirror inductor's own call for a kernel (``CppPythonBindingsCodeCache.load_async`` with no
    separately optimised code), so the header has the same hash and file, and inductor's call finds it (or waits
    on its file lock). These are private details of torch's: where they are missing (another version) nothing is
    built and inductor builds the header itself; a test checks that inductor uses this one.
    """
    from torch._inductor import codecache
    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import CppBuilder, CppTorchDeviceOptions

    bindings = getattr(codecache, "CppPythonBindingsCodeCache", None)
    if (not inductor_config.cpp_cache_precompile_headers or bindings is None
            or not hasattr(codecache, "_precompile_header") or not hasattr(bindings, "_get_uncompiled_header")):
        return None
    header = bindings._get_uncompiled_header("cpu")
    if header is None:
        return None
    command = {**bindings.cpp_compile_command_flags, "device_type": "cpu", "extra_flags": (),
               "use_relative_path": inductor_config.is_fbcode(), "vec_isa": vec_isa}
    options = CppTorchDeviceOptions(compile_only=False, min_optimize=False, **command)
    command_line = CppBuilder(name="o", sources="i", BuildOption=options).get_command_line()
    return codecache._precompile_header(header, command_line, min_optimize=False, **command)


DYNAMIC = "dynamic"  # use_compile value: every dimension dynamic from the first call (shapes that change per step)


@contextmanager
def distinct_symbols_for_equal_sizes() -> Iterator[None]:
    """While compiling with dynamic shapes, give each dimension its own symbol even where two sizes are equal.

    torch's "duck shaping" makes equal sizes one symbol (e.g. 5,000 bins per minibatch and 5,000 genes), and the
    first minibatch of another size then breaks that equality and compiles everything again. The setting is a
    private detail of torch's; without it nothing changes.
    """
    try:
        from torch.fx.experimental import _config as fx_config
    except ImportError:
        fx_config = None
    if fx_config is None or not hasattr(fx_config, "use_duck_shape"):
        yield
        return
    with fx_config.patch(use_duck_shape=False):
        yield


class CompiledOrEager:
    """Call ``fn`` through torch.compile when asked (compiled on first use), else eagerly.

    ``use_compile``: False (eager), True (torch's default: sizes static until one changes, then a second, dynamic
    compile) or :data:`DYNAMIC` (one compile with every size dynamic, for minibatches whose sizes change: a
    20,000-bin mapping compiled 4 graphs instead of 8, bench/RESULTS.md "Minibatch graphs dynamic from the start").
    If compilation fails (no C++ compiler on CPU, no Triton on GPU) it warns once and runs ``fn`` eagerly from then
    on: the same values to float32 rounding (the compiled CPU likelihood pass takes its logarithms from
    ``special_functions.polynomial_log``), only slower.
    """

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what
        self.compiled: dict[bool, Callable] = {}
        self.failed = False

    def __call__(self, use_compile: bool | str, *args):
        if use_compile and not self.failed:
            dynamic = use_compile == DYNAMIC
            try:
                if dynamic not in self.compiled:
                    self.compiled[dynamic] = torch.compile(self.fn, dynamic=True if dynamic else None)
                with distinct_symbols_for_equal_sizes() if dynamic else nullcontext():
                    return self.compiled[dynamic](*args)
            except Exception as err:
                log.warning("torch.compile of %s failed (%s); running it eagerly", self.what, err)
                self.failed = True
        return self.fn(*args)


def use_compile_cache(root: str | None) -> Path | None:
    """Keep inductor's compiled kernels under ``root``, a folder later tasks reach too, and return it.

    A container's /tmp (torch's default) dies with its task, so every task compiled the objective anew: about
    33 s of compiling, 44 s of wall time, in a 2,000-spot CPU mapping (bench/RESULTS.md, "A compile cache"),
    39–61 s on a GPU. Object-store URIs work through a Fusion or gcsfuse mount, as checkpoints do. A folder
    that cannot be written only costs the cache: a warning, and torch's default folder.
    """
    if not root:
        return None
    from .checkpoint import local_directory

    directory = local_directory(root)
    try:
        if directory is None:
            raise OSError("not reachable as a path inside this task")
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as err:
        log.warning("Compile cache off: '%s' cannot be written (%s); torch.compile uses its default folder. Set "
                    "--compile-cache-dir to a writable, mounted or shared folder.", root, err)
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())
    return directory


def log_compile_cache_use(what: str) -> None:
    """Log how many compiled graphs came from inductor's cache and how many were compiled now."""
    from torch._dynamo.utils import counters

    hits, misses = counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]
    if hits or misses:
        log.info("%s: %d compiled graphs read from the compile cache (%s), %d compiled now", what, hits,
                 os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's default folder"), misses)
