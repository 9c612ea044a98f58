"""Click options shared by the training/export commands of both stages."""

from __future__ import annotations

import click


def posterior_export_options(default_prefix: str):
    """--num-samples, --use-quantiles, --outdir and --prefix, with a stage-specific default prefix."""

    def decorate(fn):
        fn = click.option("--num-samples", type=int, default=1000, show_default=True,
                          help="Posterior samples for means/stds/q05/q95.")(fn)
        fn = click.option("--use-quantiles", is_flag=True,
                          help="Analytic q05/q50/q95 from the guide instead of sampling (large data).")(fn)
        fn = click.option("--outdir", type=click.Path(file_okay=False), default=".", show_default=True)(fn)
        fn = click.option("--prefix", default=default_prefix, show_default=True,
                          help="Prefix of every output file.")(fn)
        return fn

    return decorate


def checkpoint_options(fn):
    """--checkpoint-dir and --checkpoint-every: resumable training (see inference/checkpoint.py)."""
    fn = click.option("--checkpoint-every", type=int, default=100, show_default=True,
                      help="Epochs between checkpoints (0: none).")(fn)
    fn = click.option("--checkpoint-dir", default=None,
                      help="Folder for training checkpoints, shared by retries of the same task: training resumes "
                           "from the checkpoint of the same inputs and settings, and removes it on success. "
                           "s3://, gs:// and az:// work through a Fusion mount. Default: no checkpoints.")(fn)
    return fn


def compile_cache_option(fn):
    """--compile-cache-dir: applied while parsing, before anything compiles (see inference/compile.py)."""

    def apply(ctx, param, value):
        from ..inference.compile import use_compile_cache

        use_compile_cache(value)

    return click.option("--compile-cache-dir", default=None, expose_value=False, callback=apply,
                        help="Folder for torch.compile's compiled kernels, shared by later runs and tasks so they "
                             "skip compiling (seconds to a minute). s3://, gs:// and az:// work through a Fusion "
                             "mount. Default: torch's ($TORCHINDUCTOR_CACHE_DIR, else a folder in /tmp).")(fn)
