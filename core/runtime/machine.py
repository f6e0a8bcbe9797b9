"""Which machine a figure was measured on: the CPU model, its logical cores, the kernel, numpy's BLAS, the library
versions. The benchmarks print these lines and the results tables carry them, so both name a machine alike."""
import os
import platform
from pathlib import Path

import numpy as np

try:
    import threadpoolctl
except ImportError:  # a virtual environment from before requirements.txt listed it
    threadpoolctl = None


def cpu_line():
    """The line naming the CPU model, its logical cores and the operating system's kernel."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "unknown")
    return f"CPU: {model}, {os.cpu_count()} logical cores; kernel {platform.system()} {platform.release()}"


def blas_lines():
    """The line naming numpy's BLAS (library, version, kernel, threads), plus a warning line when
    OPENBLAS_CORETYPE is set, since figures measured under it are not those users get."""
    lines = [f"numpy BLAS: {numpy_blas()}"]
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype is not None:
        lines.append(f"warning: OPENBLAS_CORETYPE={coretype} is set: numpy uses older kernels here (up to 1.5x "
                     "slower matmuls on some machines); unset it for figures users will see")
    return lines


def numpy_blas():
    """What threadpoolctl sees of the BLAS numpy loaded, else what numpy was built against."""
    loaded = [] if threadpoolctl is None else [info for info in threadpoolctl.threadpool_info()
                                               if info["user_api"] == "blas"]
    # torch may load a BLAS of its own; numpy's wheels keep theirs inside numpy's folders.
    ours = [info for info in loaded if "numpy" in info["filepath"]] or loaded
    if ours:
        info = ours[0]
        kernel = f", kernel {info['architecture']}" if info.get("architecture") else ""
        return f"{info['internal_api']} {info['version']}{kernel}, {info['num_threads']} threads"
    built = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return f"{built['name']} {built.get('version', '')} as built (kernel and threads unknown: install threadpoolctl)"


def describe_machine():
    """One line for a table's provenance: CPU and kernel, torch's and numpy's versions, numpy's BLAS."""
    import torch

    return f"{cpu_line()}; torch {torch.__version__}; numpy {np.__version__}, {'; '.join(blas_lines())}"
