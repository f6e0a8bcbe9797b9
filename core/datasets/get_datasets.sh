#!/usr/bin/env bash
# Download the CS231n COCO captioning data into core/datasets/coco_captioning (beside this script).
# Arguments pass through to `python -m core.datasets.coco` (see --help), e.g. --sha256 HEX or --dir DIR;
# --karpathy also installs Karpathy's splits (dataset_coco.json) there, for --protocol karpathy.
# PYTHON overrides the interpreter (default: the project's .venv if present, else python3).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
default_python="python3"
if [[ -x "${repo_root}/.venv/bin/python" ]]; then
    default_python="${repo_root}/.venv/bin/python"
fi

python="${PYTHON:-${default_python}}"
# An interpreter without the project's packages would fail with a traceback: say what to install instead, and
# answer --help from these comments.
if ! "${python}" -c "import h5py, numpy, tqdm" >/dev/null 2>&1; then
    for arg in "$@"; do
        if [[ "${arg}" == "-h" || "${arg}" == "--help" ]]; then
            sed -n '2,5s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            echo "(${python} lacks the project's packages; with them, --help lists every flag.)"
            exit 0
        fi
    done
    echo "error: ${python} cannot import the project's packages (h5py, numpy, tqdm): create the environment with" \
        "'make test' (or python3 -m venv .venv && .venv/bin/pip install -r requirements.txt), or set PYTHON" >&2
    exit 2
fi
# PYTHONPATH rather than cd, so that a relative --dir given by the caller keeps its meaning.
export PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${python}" -m core.datasets.coco --dir "${script_dir}/coco_captioning" "$@"
