"""Networks behind the texture vector besides the normalised VGG-19 (issue 6).

The paper (Lubbers et al. 2017) closes on an open question: would a *random* network embed
microstructures as well as the trained VGG-19? This module provides the two backbones that
answer it, both usable wherever ``weights=`` is accepted:

``"random"`` or ``"random:SEED"`` -- the multi-scale random network of Ustyuzhaninov et al.
    (ICLR 2017, "What does it take to generate natural textures?", arXiv:1606.00021): one
    convolution layer with filters of sizes 3, 5, 7, 11, 15, 23, 37 and 55 pixels, 128 maps
    each (1024 maps), ReLU, and the Gatys Gram loss 1 / (4 N^2 M^2) over that one layer.
    Nothing is downloaded: the filters are drawn from ``numpy.random.default_rng(SEED)``
    (SEED 0 for plain ``"random"``). Choices, with their reasons:

    - *One Gram matrix over all 1024 maps* (N = 1024, 524,800 features): the paper treats
      the multi-scale network as a single layer whose feature maps are all correlated with
      each other, so cross-scale correlations are part of the texture model.
    - *"Same" zero padding* (pad K // 2): every map then has the image's H x W pixels, so
      the 1024 maps share one M and one Gram matrix, as a single layer needs.
    - *Filter weights* i.i.d. uniform in [-b, b] with He et al.'s bound b = sqrt(6 / fan_in),
      fan_in = 3 K^2, then each filter's mean is subtracted (zero-mean filters, so a flat
      image region gives no response and the grey level does not leak in); biases are 0.
      The overall scale is immaterial: ReLU is positively homogeneous, so it only
      multiplies every distance by one constant and leaves MDS embeddings, RMSE and R^2
      unchanged. The sources at hand did not give the exact distribution; this choice is
      ours (He initialisation, as usual for ReLU networks) and is written into the
      provenance through :attr:`Backbone.sha256` (the sha256 of the filters' bytes).
    - *Input*: exactly the VGG input (grey x 255 replicated to 3 channels minus the BGR
      mean), so the two networks see the same pixels and only the network differs.

``"vgg19-imagenet"`` or a ``.pth`` path -- torchvision's ImageNet VGG-19
    (``vgg19-dcbb9e9d.pth``), found in the torch hub cache
    ``torch.hub.get_dir() / "checkpoints"`` (``$TORCH_HOME/hub/checkpoints``) or given by
    path, read with ``torch.load(weights_only=True)`` (which refuses pickles that carry
    code), with torchvision's input normalisation ((x - mu) / sigma in RGB) folded exactly
    into conv1_1, and then normalised the way Gatys et al. normalised their VGG-19: layer by
    layer, each filter's weights and bias are divided by its mean ReLU activation over a
    set of images and positions, so that mean becomes 1 (:func:`gatys_normalize`). Gatys
    used ImageNet images; offline we default to synthetic textures of :mod:`microscale.synth`
    (:func:`default_normalization_images`), and any image set can be passed. The result
    is cached as safetensors in :func:`microscale.weights.default_cache_dir` with the
    sha256 of the checkpoint, of the image set and of the normalised parameters. Reading
    and normalising the checkpoint is weights' work, so it lives in
    :mod:`microscale.weights` (this module re-exports it); weights imports nothing of
    this module.

:func:`describe_backbone` gives the texture-vector length and the identity (sha256) of any
``weights=`` value, for stores and provenance; :func:`n_features`, :func:`feature_slices`
and :func:`backbone_layers` its layers and texture-vector layout (no network is loaded).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from microscale.weights import (
    CONV_LAYERS,
    DEFAULT_LAYERS,
    DEFAULT_WEIGHTS,
    IMAGENET_FILE,
    IMAGENET_URL,
    IMAGENET_WEIGHTS,
    TORCHVISION_CONV_INDEX,
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    VGGWeights,
    default_normalization_images,
    find_imagenet_checkpoint,
    gatys_normalize,
    load_imagenet_weights,
    load_weights,
    params_sha256,
    read_torchvision_vgg19,
)

__all__ = [
    "IMAGENET_FILE",
    "IMAGENET_URL",
    "IMAGENET_WEIGHTS",
    "RANDOM_FILTER_SIZES",
    "RANDOM_LAYER",
    "RANDOM_MAPS_PER_SIZE",
    "Backbone",
    "RandomMultiscaleFeatures",
    "TORCHVISION_CONV_INDEX",
    "TORCHVISION_MEAN",
    "TORCHVISION_STD",
    "backbone_layers",
    "check_layers",
    "default_normalization_images",
    "describe_backbone",
    "feature_slices",
    "find_imagenet_checkpoint",
    "gatys_normalize",
    "load_imagenet_weights",
    "n_features",
    "params_sha256",
    "random_filters",
    "random_seed",
    "read_torchvision_vgg19",
]

#: Filter sizes and maps per size of Ustyuzhaninov et al.'s multi-scale random network.
RANDOM_FILTER_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23, 37, 55)
RANDOM_MAPS_PER_SIZE = 128
#: The random network's one layer, as it appears in ``layers`` and feature slices.
RANDOM_LAYER = "multiscale"


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Backbone:
    """What a ``weights=`` value stands for.

    Attributes
    ----------
    name : str
        ``"vgg19-normalized"``, ``"random:SEED"``, ``"vgg19-imagenet"`` or a file path.
    kind : {"vgg19", "random"}
        Network family: VGG-19 layers, or the one-layer multi-scale random network.
    sha256 : str
        Identity for provenance: the Lasagne pickle's sha256 (normalised VGG-19), the
        sha256 of the random filters' bytes, or that of the Gatys-normalised ImageNet
        parameters.
    layers : tuple of str
        Layers whose Gram matrices form the texture vector, in network order.
    n_features : int
        Texture-vector length.
    source : str
        Where the parameters come from.
    """

    name: str
    kind: str
    sha256: str
    layers: tuple[str, ...]
    n_features: int
    source: str


def random_seed(weights: object) -> int | None:
    """The seed of a ``"random"`` / ``"random:SEED"`` weights name, else None.

    Raises
    ------
    ValueError
        For ``"random:"`` followed by something that is not a non-negative integer.
    """
    if not isinstance(weights, str) or not (weights == "random" or weights.startswith("random:")):
        return None
    if weights == "random":
        return 0
    text = weights.split(":", 1)[1]
    if not text.isdigit():
        raise ValueError(
            f"The random backbone is named 'random' or 'random:SEED' with SEED a non-negative "
            f"int. Got {weights!r} instead."
        )
    return int(text)


def describe_backbone(
    weights: str | Path | VGGWeights = DEFAULT_WEIGHTS, *, layers: Sequence[str] | None = None
) -> Backbone:
    """Name, feature count and sha256 of the network a ``weights=`` value selects.

    Parameters
    ----------
    weights : str, Path or VGGWeights
        As for :func:`microscale.texture_vectors`: ``"vgg19-normalized"``, ``"random"``,
        ``"random:SEED"``, ``"vgg19-imagenet"``, a weights file, or loaded weights.
    layers : sequence of str, optional
        VGG-19 layers (default conv1_1 ... conv5_1). The random network has one layer,
        ``"multiscale"``; leave ``layers`` out for it.

    Returns
    -------
    Backbone
        Loading VGG weights may fetch or normalise them (cached after the first time);
        the random network is only drawn.

    Examples
    --------
    >>> from microscale.backbones import describe_backbone
    >>> describe_backbone("random:3").n_features
    524800
    """
    layers = backbone_layers(weights, layers)
    count = n_features(layers, weights=weights)
    seed = random_seed(weights)
    if seed is not None:
        return Backbone(
            name=f"random:{seed}",
            kind="random",
            sha256=_random_sha256(seed),
            layers=layers,
            n_features=count,
            source=f"numpy.random.default_rng({seed}), He-uniform zero-mean filters",
        )
    if isinstance(weights, VGGWeights):
        loaded, name = weights, "<VGGWeights>"
    else:
        loaded, name = load_weights(weights), str(weights)
    return Backbone(
        name=name,
        kind="vgg19",
        sha256=loaded.sha256,
        layers=layers,
        n_features=count,
        source=loaded.source,
    )


# --------------------------------------------------------------------------- layers and sizes


def _channels(layer: str) -> int:
    if layer == RANDOM_LAYER:
        return len(RANDOM_FILTER_SIZES) * RANDOM_MAPS_PER_SIZE
    return {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[int(layer[4])]


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """``layers`` validated as distinct VGG-19 convolution layers, in network order."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in CONV_LAYERS]
    if not layers or unknown:
        raise ValueError(
            f"The 'layers' parameter must name VGG-19 convolution layers from {CONV_LAYERS}. "
            f"Got {layers!r} instead."
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"The 'layers' parameter lists a layer twice: {layers!r}.")
    return tuple(sorted(layers, key=CONV_LAYERS.index))


def backbone_layers(weights: object, layers: Sequence[str] | None = None) -> tuple[str, ...]:
    """The layers a texture vector of ``weights`` is made of, validated, in network order.

    VGG-19 weights (the default, ImageNet, files, :class:`VGGWeights`): ``layers`` or
    :data:`DEFAULT_LAYERS`. The random network (``"random"``, ``"random:SEED"``) has one
    layer, ``("multiscale",)``; for it ``layers`` must be left out, be the default, or be
    that one layer.
    """
    if random_seed(weights) is not None:
        if layers is None or tuple(layers) in (DEFAULT_LAYERS, (RANDOM_LAYER,)):
            return (RANDOM_LAYER,)
        raise ValueError(
            f"The random backbone has one layer, {RANDOM_LAYER!r}; leave 'layers' at its "
            f"default. Got {tuple(layers)!r} instead."
        )
    return check_layers(DEFAULT_LAYERS if layers is None else layers)


def n_features(
    layers: Sequence[str] = DEFAULT_LAYERS, *, weights: str | Path | VGGWeights | None = None
) -> int:
    """Length of a texture vector for ``layers`` (305,888 for the default five).

    With ``weights="random"`` (or ``"random:SEED"``): 1024 * 1025 / 2 = 524,800, the
    upper triangle of the random network's one Gram matrix. Nothing is loaded.
    """
    return sum(
        _channels(name) * (_channels(name) + 1) // 2 for name in backbone_layers(weights, layers)
    )


def feature_slices(
    layers: Sequence[str] = DEFAULT_LAYERS, *, weights: str | Path | VGGWeights | None = None
) -> dict[str, slice]:
    """Where each layer's upper triangle sits in a texture vector of ``weights``."""
    out, start = {}, 0
    for name in backbone_layers(weights, layers):
        size = _channels(name) * (_channels(name) + 1) // 2
        out[name] = slice(start, start + size)
        start += size
    return out


# --------------------------------------------------------------------------- random network


def random_filters(seed: int = 0) -> dict[int, np.ndarray]:
    """The random network's filters, ``{K: (128, 3, K, K) float32}`` for each size K.

    Drawn in the order of :data:`RANDOM_FILTER_SIZES` from
    ``numpy.random.default_rng(seed)``: uniform in [-b, b], b = sqrt(6 / (3 K^2)), then
    each filter's mean (over its 3 K^2 weights) subtracted.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be a non-negative int. Got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    out = {}
    for k in RANDOM_FILTER_SIZES:
        bound = math.sqrt(6.0 / (3 * k * k))
        w = rng.uniform(-bound, bound, size=(RANDOM_MAPS_PER_SIZE, 3, k, k))
        w -= w.mean(axis=(1, 2, 3), keepdims=True)
        out[k] = w.astype(np.float32)
    return out


@functools.lru_cache(maxsize=8)
def _random_sha256(seed: int) -> str:
    digest = hashlib.sha256(b"microscale random multiscale v1")
    for k, w in random_filters(seed).items():
        digest.update(f"{k}:".encode())
        digest.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
    return digest.hexdigest()


class RandomMultiscaleFeatures(nn.Module):
    """Ustyuzhaninov et al.'s one-layer multi-scale random network.

    Parameters
    ----------
    seed : int
        Seed of :func:`random_filters`.
    mean_bgr : sequence of 3 floats, optional
        Pixel mean subtracted from the input, as for VGG-19.

    Notes
    -----
    A grey input is the same in all three channels, so the convolution with a 3-channel
    filter W equals the convolution of the grey image x 255 with the channel sum of W,
    minus a fixed map (the mean's response under zero padding). :meth:`forward` computes
    it that way (three times fewer operations); the tests check it against a plain
    3-channel float64 convolution.
    """

    def __init__(
        self, seed: int = 0, mean_bgr: Sequence[float] = (103.939, 116.779, 123.68)
    ) -> None:
        super().__init__()
        self.seed = int(seed)
        self.layers = (RANDOM_LAYER,)
        self.weights_sha256 = _random_sha256(self.seed)
        for k, w in random_filters(self.seed).items():
            self.register_buffer(f"w{k}", torch.from_numpy(w))
        self.register_buffer(
            "mean_bgr", torch.tensor(list(mean_bgr), dtype=torch.float32).view(1, 3, 1, 1)
        )
        self._offsets: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}
        self.requires_grad_(False)

    def preprocess(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, H, W) grey in [0, 1] -> (B, 3, H, W) BGR minus the mean, as for VGG."""
        return grey.unsqueeze(1).mul(255.0).expand(-1, 3, -1, -1) - self.mean_bgr

    def _filters(self) -> list[tuple[int, torch.Tensor]]:
        return [(k, getattr(self, f"w{k}")) for k in RANDOM_FILTER_SIZES]

    def _offset(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        key = (h, w, str(like.device), like.dtype)
        if key not in self._offsets:
            with torch.inference_mode(False), torch.no_grad():  # cached: usable under autograd
                const = self.mean_bgr.to(like).expand(1, 3, h, w)
                parts = [F.conv2d(const, wk.to(like), padding=k // 2) for k, wk in self._filters()]
                self._offsets[key] = torch.cat(parts, dim=1)
        return self._offsets[key]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) preprocessed input -> [(B, 1024, H, W) ReLU output]."""
        b, c, h, w = x.shape
        mean = self.mean_bgr.to(x)
        grey = x[:, :1] + mean[:, :1]  # 255 g
        if c != 3 or not torch.allclose(x + mean, grey.expand(-1, 3, -1, -1), atol=1e-3):
            parts = [F.conv2d(x, wk.to(x), padding=k // 2) for k, wk in self._filters()]
            return [F.relu(torch.cat(parts, dim=1))]
        parts = [
            F.conv2d(grey, wk.to(x).sum(1, keepdim=True), padding=k // 2)
            for k, wk in self._filters()
        ]
        return [F.relu(torch.cat(parts, dim=1) - self._offset(h, w, x))]
