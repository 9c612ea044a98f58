#!/bin/sh
# The CPU image's variant of requirements.lock (stdin -> stdout): the same pins, with torch's CPU-only
# build of the same version (from https://download.pytorch.org/whl/cpu) and without the CUDA libraries
# that only the CUDA build needs.
set -eu
grep -vE '^(nvidia-|cuda-|triton==)' | sed -E 's/^torch==([0-9][^ ]*)/torch==\1+cpu/'
