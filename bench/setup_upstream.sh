#!/usr/bin/env bash
# Create bench/.venv-upstream with upstream cell2location 0.1.5 (optional part of the benchmark).
# pyro-ppl is pinned to 1.9.1: with 1.9.2, `import cell2location` fails (deep_getattr import).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-upstream"
torch_version="$("$here/../.venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==$torch_version"
"$venv/bin/python" -m pip install --quiet -r "$here/requirements-upstream.txt"
"$venv/bin/python" -c "import cell2location, torch; print('cell2location', cell2location.__version__, 'torch', torch.__version__)"
