"""Choosing the torch device: the GPU when there is one, else the CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to run on.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` means the first CUDA device when torch sees one, else the CPU.

    Raises
    ------
    ValueError
        If ``device`` names no torch device, or a CUDA device on a machine without one.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            "The 'device' parameter must name a torch device such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"The 'device' parameter is {str(device)!r} but torch sees no CUDA device "
            "(CUDA is not available). Pass device='cpu', or device=None to use what is present."
        )
    return dev
