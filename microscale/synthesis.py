"""Texture synthesis from one image (Gatys et al. 2015; Fig. 1 of Lubbers et al. 2017).

Starting from noise, the pixels of x are optimised by L-BFGS to minimise the texture loss
L(x, x_orig) = ||t(x) - t(x_orig)||^2, where t is :func:`microscale.texture_vectors`'s map.
What the synthesised image keeps (and what it loses: position, long-range order) shows
what the texture vector captures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike

from microscale._validation import renamed
from microscale.device import resolve_device
from microscale.intensity import normalize_intensity
from microscale.texture import (
    DEFAULT_LAYERS,
    check_layers,
    exact_float32,
    gram_vectors,
    resolve_model,
)
from microscale.weights import DEFAULT_WEIGHTS, VGGWeights

__all__ = ["SynthesisResult", "synthesize_texture"]


@dataclass(frozen=True)
class SynthesisResult:
    """Outcome of :func:`synthesize_texture`.

    Attributes
    ----------
    image : (H, W) ndarray of float32
        The synthesised image, clipped to [0, 1].
    loss : (n_evaluations,) ndarray
        Texture loss L(x, x_orig) at each function evaluation, starting from the noise.
    initial_loss_noise : float
        Loss of the starting noise, for scale.
    """

    image: np.ndarray
    loss: np.ndarray
    initial_loss_noise: float


def synthesize_texture(
    image: ArrayLike,
    *,
    steps: int = 100,
    random_state: int | None = None,
    weights: str | Path | VGGWeights = DEFAULT_WEIGHTS,
    layers: Sequence[str] = DEFAULT_LAYERS,
    device: str | torch.device | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> SynthesisResult:
    """Synthesise a new image with the texture vector of ``image``.

    Parameters
    ----------
    image : (H, W) array_like
        The original, mapped to [0, 1] by min/max.
    steps : int, optional
        L-BFGS iterations (at most 1.25 function evaluations each).
    random_state : int, optional
        Seed of the starting uniform noise (default 0).
    weights, layers, device : optional
        As for :func:`microscale.texture_vectors`.
    progress : bool, optional
        Show a progress bar.
    seed : int, optional
        The old name of ``random_state`` (a FutureWarning; removed in the next release).

    Returns
    -------
    SynthesisResult
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"The 'steps' parameter must be a positive int. Got {steps!r} instead.")
    grey = normalize_intensity(image)
    if len(grey) != 1:
        raise ValueError(f"Pass one (H, W) image to synthesise from; got {len(grey)}.")
    dev = resolve_device(device)
    model = resolve_model(weights, check_layers(layers), dev)
    target_img = torch.from_numpy(grey).to(dev)
    random_state = renamed(
        random_state, seed, new_name="random_state", old_name="seed", caller="synthesize_texture"
    )
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    x = torch.rand(grey.shape, generator=gen, dtype=torch.float32).to(dev).requires_grad_(True)
    losses: list[float] = []

    with exact_float32():
        with torch.no_grad():
            target = gram_vectors(model(model.preprocess(target_img)))

        def loss_of(img: torch.Tensor) -> torch.Tensor:
            return (gram_vectors(model(model.preprocess(img))) - target).pow(2).sum()

        with torch.no_grad():
            noise_loss = float(loss_of(x))
        optimizer = torch.optim.LBFGS(
            [x],
            max_iter=steps,
            max_eval=int(steps * 1.25) + 1,
            history_size=20,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(steps * 1.25) + 1, desc="texture synthesis", unit="eval")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_of(x)
            loss.backward()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
            return loss

        optimizer.step(closure)
        if bar is not None:
            bar.close()
    out = x.detach().clamp(0, 1)[0].cpu().numpy().astype(np.float32)
    return SynthesisResult(image=out, loss=np.asarray(losses), initial_loss_noise=noise_loss)
