"""Choosing the torch device from a ``--device`` flag (numpy models always run on the CPU)."""
from core.runtime.errors import UserError


def pick_device(name="auto"):
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered "
                        "from 0; pick one of them")
    return device


def parse_device(name):
    """The torch.device ``name`` means ("auto" aside); UserError for a name that is none."""
    import torch

    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device name: use auto, cpu or cuda[:N]") from None
