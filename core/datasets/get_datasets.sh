#!/usr/bin/env bash
# Download the CS231n COCO captioning data into core/datasets/coco_captioning (beside this script).
# Arguments pass through to `python -m core.datasets.coco` (see --help), e.g. --sha256 HEX or --dir DIR;
# --karpathy also installs Karpathy's splits (dataset_coco.json) there, for --splits karpathy.
# PYTHON overrides the interpreter (default: the project's .venv if present, else python3).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
default_python="python3"
if [[ -x "${repo_root}/.venv/bin/python" ]]; then
    default_python="${repo_root}/.venv/bin/python"
fi

# PYTHONPATH rather than cd, so that a relative --dir given by the caller keeps its meaning.
export PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-${default_python}}" -m core.datasets.coco --dir "${script_dir}/coco_captioning" "$@"
