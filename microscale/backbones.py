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
    sha256 of the checkpoint, of the image set and of the normalised parameters.

:func:`describe_backbone` gives the texture-vector length and the identity (sha256) of any
``weights=`` value, for stores and provenance.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.nn import functional as F

from microscale.weights import (
    CONV_LAYERS,
    DEFAULT_WEIGHTS,
    VGGWeights,
    WeightsError,
    WeightsUnavailableError,
    default_cache_dir,
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
    "default_normalization_images",
    "describe_backbone",
    "find_imagenet_checkpoint",
    "gatys_normalize",
    "load_imagenet_weights",
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
IMAGENET_WEIGHTS = "vgg19-imagenet"
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
#: torchvision's ImageNet input normalisation, RGB.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
#: Indices of the 16 convolutions in ``torchvision.models.vgg19().features``.
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
_NORMALIZATION_SEED = 1505  # arXiv:1505.07376 (Gatys et al.); differs from the paper's seeds


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
    from microscale.texture import backbone_layers, n_features

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
        from microscale.weights import load_weights

        loaded, name = load_weights(weights), str(weights)
    return Backbone(
        name=name,
        kind="vgg19",
        sha256=loaded.sha256,
        layers=layers,
        n_features=count,
        source=loaded.source,
    )


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


# --------------------------------------------------------------------------- ImageNet VGG-19


def find_imagenet_checkpoint(path: str | Path | None = None) -> Path:
    """Locate torchvision's ``vgg19-dcbb9e9d.pth``: ``path``, else the torch hub cache.

    Raises
    ------
    WeightsUnavailableError
        Naming both ways to provide the file.
    """
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        raise WeightsUnavailableError(
            f"The ImageNet VGG-19 checkpoint {p} does not exist. Pass the path of "
            f"torchvision's {IMAGENET_FILE} (download it from {IMAGENET_URL})."
        )
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    candidate = hub / IMAGENET_FILE
    if candidate.is_file():
        return candidate
    raise WeightsUnavailableError(
        f"torchvision's ImageNet VGG-19 is not available on this machine: {candidate} does "
        f"not exist. Either put {IMAGENET_FILE} (from {IMAGENET_URL}, or run "
        "`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` "
        "where the internet is reachable) into the torch hub cache "
        f"({hub}; set TORCH_HOME to move it), or pass its path: weights='/path/to/{IMAGENET_FILE}'."
    )


def read_torchvision_vgg19(path: str | Path) -> dict[str, np.ndarray]:
    """The 16 convolutions of a torchvision VGG-19 state dict, as ``"conv1_1.weight"`` ...

    Read with ``torch.load(weights_only=True)``: tensors and containers only, never code.
    The classifier's parameters are ignored.

    Raises
    ------
    WeightsError
        If the file is not a loadable state dict (including pickles with other globals) or
        lacks a convolution or has the wrong shapes.
    """
    import pickle

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"Refused to load {path}: torch.load(weights_only=True) found more than tensors "
            f"({str(exc).splitlines()[0]}). The file is not a torchvision state dict and may "
            "be malicious; do not load it with weights_only=False."
        ) from exc
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable torch checkpoint ({exc}).") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict.")
    from microscale.weights import _conv_params

    values = []
    for idx in TORCHVISION_CONV_INDEX:
        for kind in ("weight", "bias"):
            key = f"features.{idx}.{kind}"
            if key not in state or not isinstance(state[key], torch.Tensor):
                raise WeightsError(
                    f"{path} lacks the tensor {key!r}: it is not torchvision's VGG-19 "
                    f"({IMAGENET_FILE})."
                )
            values.append(state[key].detach().to(torch.float32).numpy())
    return _conv_params(values, str(path))


def _fold_input_normalization(params: dict[str, np.ndarray]) -> tuple[dict, np.ndarray]:
    """torchvision wants (x - mu_c) / s_c for x in [0, 1]; microscale feeds 255 x - m_c.

    With m_c = 255 mu_c the input is 255 s_c times torchvision's, zero padding included, so
    dividing conv1_1's weights by 255 s_c reproduces torchvision's network exactly.
    """
    out = dict(params)
    scale = 255.0 * np.asarray(TORCHVISION_STD, dtype=np.float64)
    out["conv1_1.weight"] = (params["conv1_1.weight"] / scale.reshape(1, 3, 1, 1)).astype(
        np.float32
    )
    return out, 255.0 * np.asarray(TORCHVISION_MEAN, dtype=np.float64)


def default_normalization_images(*, size: int = 128, n: int = 3) -> np.ndarray:
    """Synthetic stripe textures for Gatys normalisation, (n**3, size, size) in [0, 1].

    The 3-D task's family (:func:`microscale.synth.grid_dataset`: theta, k, A on an
    n x n x n grid) with a seed the paper runs do not use.
    """
    from microscale import synth

    data = synth.grid_dataset(n, size=size, seed=_NORMALIZATION_SEED)
    return ((np.asarray(data.images, dtype=np.float64) + 1.0) / 2.0).astype(np.float32)


def gatys_normalize(
    weights: VGGWeights,
    images: ArrayLike,
    *,
    batch_size: int = 8,
    device: str | None = None,
) -> tuple[VGGWeights, dict[str, np.ndarray]]:
    """Rescale each filter so that its mean ReLU activation over ``images`` is 1.

    Layer by layer in network order (average pooling between blocks, as microscale's
    network), filter f of layer l has its weights and bias divided by a_f, the mean of its
    ReLU output over all images and positions, computed with layers 1 .. l-1 already
    normalised and rounded to float32 (the stored precision). ReLU is positively
    homogeneous, so this only rescales each feature map (Gatys et al. 2015, Sec. 2). A
    filter that never fires (a_f = 0) is left unchanged. The forward passes run in float64.

    Parameters
    ----------
    weights : VGGWeights
        VGG-19 convolutions.
    images : (n, H, W) array_like
        Grey images in [0, 1], H and W >= 16.
    batch_size : int, optional
        Images per forward pass.
    device : str, optional
        Torch device (default: the GPU when there is one).

    Returns
    -------
    normalized : VGGWeights
        Same layers and shapes; ``sha256`` is that of the normalised parameters.
    activations : dict of str to (N_l,) ndarray
        a_f of every layer before its rescaling.
    """
    from microscale.device import resolve_device
    from microscale.intensity import as_image_stack

    stack = np.asarray(as_image_stack(images, min_size=16), dtype=np.float32)
    if stack.min() < 0 or stack.max() > 1:
        raise ValueError("The normalisation images must lie in [0, 1]; map them first.")
    dev = resolve_device(device)
    mean = torch.tensor(np.asarray(weights.mean_bgr), dtype=torch.float64).view(1, 3, 1, 1)
    params = {k: v.astype(np.float64) for k, v in weights.params.items()}
    xs = [
        torch.from_numpy(stack[i : i + batch_size])
        .double()[:, None]
        .mul(255.0)
        .expand(-1, 3, -1, -1)
        - mean
        for i in range(0, len(stack), batch_size)
    ]
    activations = {}
    with torch.inference_mode():
        for name in CONV_LAYERS:
            w = torch.from_numpy(params[f"{name}.weight"]).to(dev)
            b = torch.from_numpy(params[f"{name}.bias"]).to(dev)
            pool = name.endswith("_1") and name != "conv1_1"
            inputs, total, count = [], None, 0
            for x in xs:
                x = F.avg_pool2d(x.to(dev), 2) if pool else x.to(dev)
                inputs.append(x)
                y = F.relu(F.conv2d(x, w, b, padding=1))
                s = y.sum(dim=(0, 2, 3))
                total = s if total is None else total + s
                count += y.shape[0] * y.shape[2] * y.shape[3]
            a = (total / count).cpu().numpy()
            activations[name] = a
            scale = np.where(a > 0, a, 1.0)
            # stored as float32: round now, so later layers see the network that is kept
            for kind, shape in (("weight", (-1, 1, 1, 1)), ("bias", (-1,))):
                key = f"{name}.{kind}"
                params[key] = (params[key] / scale.reshape(shape)).astype(np.float32)
                params[key] = params[key].astype(np.float64)
            w = torch.from_numpy(params[f"{name}.weight"]).to(dev)
            b = torch.from_numpy(params[f"{name}.bias"]).to(dev)
            xs = [F.relu(F.conv2d(x, w, b, padding=1)) for x in inputs]
    out = {k: v.astype(np.float32) for k, v in params.items()}
    normalized = VGGWeights(
        params=out,
        mean_bgr=np.asarray(weights.mean_bgr, dtype=np.float64),
        sha256=params_sha256(out),
        source=f"{weights.source} (Gatys-normalised)",
    )
    return normalized, activations


def params_sha256(params: dict[str, np.ndarray]) -> str:
    """sha256 over the 16 layers' float32 little-endian bytes in network order."""
    digest = hashlib.sha256()
    for name in CONV_LAYERS:
        for kind in ("weight", "bias"):
            digest.update(np.ascontiguousarray(params[f"{name}.{kind}"], dtype="<f4").tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    from microscale.weights import _sha256

    return _sha256(Path(path))


def load_imagenet_weights(
    path: str | Path | None = None,
    *,
    images: ArrayLike | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> VGGWeights:
    """torchvision's ImageNet VGG-19, Gatys-normalised, cached as safetensors.

    Parameters
    ----------
    path : path, optional
        ``vgg19-dcbb9e9d.pth`` (or any torchvision VGG-19 state dict). Default: the torch
        hub cache, ``torch.hub.get_dir() / "checkpoints" / "vgg19-dcbb9e9d.pth"``.
    images : (n, H, W) array_like, optional
        Grey images in [0, 1] for the normalisation; default
        :func:`default_normalization_images`.
    cache_dir : path, optional
        Where the normalised file is cached (default
        :func:`microscale.weights.default_cache_dir`).
    device : str, optional
        Torch device for the normalisation.

    Returns
    -------
    VGGWeights
        ``sha256`` is that of the normalised parameters; the cache file's metadata also
        records the checkpoint's and the image set's sha256.

    Raises
    ------
    WeightsUnavailableError
        No checkpoint at ``path`` or in the hub cache (the message says how to add one).
    WeightsError
        A file that is not a torchvision VGG-19 state dict, or that carries code.
    """
    from microscale.weights import _load_converted, _save_converted

    ckpt = find_imagenet_checkpoint(path)
    stat = ckpt.stat()
    source_sha = _file_sha256(str(ckpt.resolve()), stat.st_size, stat.st_mtime)
    imgs = default_normalization_images() if images is None else np.asarray(images, np.float32)
    images_sha = hashlib.sha256(np.ascontiguousarray(imgs, dtype="<f4").tobytes()).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"vgg19_imagenet_gatys_{source_sha[:16]}_{images_sha[:16]}.safetensors"
    if target.exists():
        return _load_converted(target)
    params, mean = _fold_input_normalization(read_torchvision_vgg19(ckpt))
    raw = VGGWeights(params=params, mean_bgr=mean, sha256=source_sha, source=str(ckpt))
    normalized, _ = gatys_normalize(raw, imgs, device=device)
    normalized = VGGWeights(normalized.params, normalized.mean_bgr, normalized.sha256, str(target))
    _save_converted(
        normalized,
        target,
        metadata={
            "source_sha256": source_sha,
            "weights_sha256": normalized.sha256,
            "normalization_images_sha256": images_sha,
            "normalization_images": json.dumps(
                {"shape": list(imgs.shape), "default": images is None}
            ),
            "format": "microscale vgg19-imagenet-gatys v1",
        },
    )
    return normalized
