"""Texture-vector settings chosen by measurement on this machine, cached beside the weights.

The fastest batch size, memory format and threads per worker of the forward pass depend
on the machine (the issue's AMX box was fastest at batch 1, the development box at no
batch size beyond the noise), so they are measured once per machine rather than fixed:
:func:`calibrate_texture` times the exact float32 texture vectors of a few synthetic
images at each candidate setting, interleaved in rounds (a change of the machine's load
hits every candidate alike) keeping each one's best round, and also the opt-in bfloat16
path for its speed-up. The result is cached in ``calibration.json`` in the weights'
cache directory (``~/.cache/microscale``), under a key made of the CPU model and its
fast-arithmetic flags, the GPU, the torch version, the device and the image size: any
change of these invalidates it. The features stage (:func:`microscale.stages.features.
run_features` with ``batch_size=None``, ``microscale run`` without ``--batch-size``)
reads it, and the pipeline's local CPU cluster takes its threads per task
(:func:`calibrated_threads`) unless ``--workers`` or ``--threads`` say otherwise;
``microscale calibrate`` runs or refreshes it.

Every setting measured computes the same float32 vectors up to rounding (channels-last
convolutions sum in another order: distances within about 1e-7 relative).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_FILE",
    "TextureCalibration",
    "TextureSetting",
    "calibrate_texture",
    "calibrated_threads",
    "ensure_calibration",
    "fast_bf16",
    "machine_key",
    "read_calibration",
]

#: Name of the cache file in the weights' cache directory.
CACHE_FILE = "calibration.json"
_VERSION = 1
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclasses.dataclass(frozen=True)
class TextureSetting:
    """One way to run the forward pass: images per batch, memory format, torch threads."""

    batch_size: int
    channels_last: bool = False
    threads: int | None = None  # None: the process's current number
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class TextureCalibration:
    """The measured settings of one machine, device and image size.

    Attributes
    ----------
    batch_size, channels_last : int, bool
        The fastest float32 setting measured.
    threads : int
        Torch threads per task that gave the most images/s per core (with ``cores //
        threads`` tasks side by side).
    images_per_second : float
        Of the chosen setting, at the process's thread count.
    bf16_speedup : float or None
        images/s of ``precision="bfloat16"`` (same batch) over the chosen float32 setting;
        None where it was not timed (no fast bfloat16 on the device: see
        :func:`calibrate_texture`).
    key : dict
        What the measurement is valid for (:func:`machine_key`).
    measured : list of dict
        Every setting and its best images/s.
    """

    batch_size: int
    channels_last: bool
    threads: int
    images_per_second: float
    bf16_speedup: float | None
    key: dict[str, Any]
    measured: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fast_bf16(device: str | None = None) -> str | None:
    """What gives this device fast bfloat16 arithmetic, or None.

    CPU: AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``) in the CPU flags (or torch's
    ``torch.backends.cpu.get_cpu_capability()``). CUDA: tensor cores with bfloat16
    (compute capability 8.0 or newer).

    Examples
    --------
    >>> fast_bf16("cpu") in (None, "AMX-BF16", "AVX-512 BF16")
    True
    """
    import torch

    from microscale.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        major, _ = torch.cuda.get_device_capability(dev)
        return "bfloat16 tensor cores" if major >= 8 else None
    flags = _cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    if "amx_bf16" in flags or "AMX" in capability:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    return None


def machine_key(*, device: str | None = None, image_size: int = 256) -> dict[str, Any]:
    """What a calibration is valid for: CPU, its flags, GPU, torch, device, image size."""
    import torch

    from microscale.device import resolve_device

    dev = resolve_device(device)
    return {
        "cpu": _cpu_model(),
        "cpu_flags": sorted(set(_FLAGS) & _cpu_flags()),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__,
        "device": dev.type,
        "image_size": int(image_size),
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _cache_path(cache_dir: str | Path | None) -> Path:
    from microscale.weights import default_cache_dir

    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CACHE_FILE


def _read_entries(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def read_calibration(
    *, device: str | None = None, image_size: int = 256, cache_dir: str | Path | None = None
) -> TextureCalibration | None:
    """The cached calibration for this machine, device and image size, or None.

    An entry made with another CPU, GPU, torch version, device or image size is ignored
    (the key of :func:`machine_key` must match exactly), as is an unreadable cache file.
    """
    key = machine_key(device=device, image_size=image_size)
    entry = _read_entries(_cache_path(cache_dir)).get(_digest(key))
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    try:
        return TextureCalibration(**entry)
    except TypeError:
        return None


def calibrated_threads(
    *, device: str | None = None, image_size: int = 256, cache_dir: str | Path | None = None
) -> int | None:
    """Torch threads per task measured best on this CPU, or None (no calibration, a GPU).

    What the pipeline gives its local Dask cluster (``threads_per_task`` of
    :func:`microscale.cluster.get_client`: ``cores // threads`` workers of that many
    threads) unless the user sizes it.
    """
    found = read_calibration(device=device, image_size=image_size, cache_dir=cache_dir)
    if found is None or found.key.get("device") != "cpu":
        return None
    return int(found.threads)


def ensure_calibration(
    *,
    device: str | None = None,
    image_size: int = 256,
    weights: Any = "vgg19-normalized",
    cache_dir: str | Path | None = None,
    on_start: Callable[[str], object] | None = None,
) -> TextureCalibration | None:
    """This machine's calibration for the image size: the cached one, else measured now.

    The one-off measurement a pipeline run makes before its first texture vectors on a
    machine (:func:`calibrate_texture` with its defaults: about a minute for 256 x 256
    tiles on a 2-core CPU, seconds on a GPU), so that the settings it uses are measured,
    not constants. The cache is keyed by machine, device, torch version and image size,
    not by network: only VGG-19 backbones (the normalised or ImageNet weights, or a
    weights file) are measured; ``weights="random..."`` (a smaller test network) gets
    None and the caller's defaults.

    Parameters
    ----------
    device, image_size, weights, cache_dir
        As for :func:`calibrate_texture`.
    on_start : callable, optional
        Called with one line (for the log or the terminal) before a measurement starts;
        not called when the calibration is cached.

    Returns
    -------
    TextureCalibration or None
    """
    if isinstance(weights, str) and weights.startswith("random"):
        return None
    found = read_calibration(device=device, image_size=image_size, cache_dir=cache_dir)
    if found is not None:
        return found
    if on_start is not None:
        on_start(
            f"No texture calibration for this machine and {image_size}x{image_size} tiles: "
            "measuring the fastest batch size, memory format and threads once (as "
            "'microscale calibrate' does; cached for later runs)."
        )
    return calibrate_texture(
        device=device, image_size=image_size, weights=weights, cache_dir=cache_dir
    )


def _write(calibration: TextureCalibration, cache_dir: str | Path | None) -> Path:
    path = _cache_path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = _read_entries(path)
    entries[_digest(calibration.key)] = calibration.to_json()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": _VERSION, "entries": entries}, indent=1))
    os.replace(tmp, path)
    return path


def _default_forward(
    device: str | None, weights: Any
) -> Callable[[TextureSetting, np.ndarray], object]:
    import torch

    from microscale.texture import texture_vectors

    def forward(setting: TextureSetting, images: np.ndarray) -> object:
        saved = torch.get_num_threads()
        if setting.threads is not None:
            torch.set_num_threads(setting.threads)
        try:
            return texture_vectors(
                images,
                weights=weights,
                normalize=None,
                device=device,
                batch_size=setting.batch_size,
                channels_last=setting.channels_last,
                precision=setting.precision,
            )
        finally:
            torch.set_num_threads(saved)

    return forward


def _thread_counts(cores: int) -> list[int]:
    counts = sorted({1, max(1, cores // 2), cores})
    return [t for t in counts if cores % t == 0]


def calibrate_texture(
    *,
    device: str | None = None,
    image_size: int = 256,
    weights: Any = "vgg19-normalized",
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    n_images: int = 8,
    repeat: int = 2,
    cache_dir: str | Path | None = None,
    save: bool = True,
    timer: Callable[[], float] = time.perf_counter,
    forward: Callable[[TextureSetting, np.ndarray], object] | None = None,
    time_bf16: bool | None = None,
) -> TextureCalibration:
    """Measure the fastest texture-vector settings here and cache them.

    Times :func:`microscale.texture.texture_vectors` (exact float32) on `n_images`
    random images of ``image_size x image_size`` for every batch size in `batch_sizes`,
    NCHW and channels-last, in `repeat` interleaved rounds, each setting keeping its
    best round; then, at the fastest setting, torch threads per task (1, half and all
    of the cores on a CPU: the images/s per core decides, as ``cores // threads``
    tasks would run side by side) and ``precision="bfloat16"`` for its speed-up, where
    the device has fast bfloat16 (:func:`fast_bf16`). Elsewhere bfloat16 is emulated and
    slow (0.01x float32 on an AVX2 CPU: about 10 minutes for the default 8 images of
    256 x 256), so it is not timed unless `time_bf16` asks for it.

    Parameters
    ----------
    device : str, optional
        Torch device; default the GPU when there is one.
    image_size : int, optional
        Side of the tiles the pipeline feeds (the store's tile size).
    weights : optional
        As for :func:`~microscale.texture.texture_vectors`.
    batch_sizes : sequence of int, optional
        Candidates; each larger than `n_images` is skipped.
    n_images, repeat : int, optional
        Images per timing and timed rounds.
    cache_dir : path, optional
        Where ``calibration.json`` lives (default: the weights' cache directory).
    save : bool, optional
        Write the result to the cache (default).
    timer : callable, optional
        Clock in seconds (tests pass a fake one).
    forward : callable, optional
        ``forward(setting, images)`` runs one timing (tests pass a fake one); default
        :func:`~microscale.texture.texture_vectors` with the setting.
    time_bf16 : bool, optional
        Time ``precision="bfloat16"``; default: where :func:`fast_bf16` finds fast
        bfloat16 on the device.

    Returns
    -------
    TextureCalibration
    """
    from microscale._validation import check_positive_int

    image_size = check_positive_int(image_size, "image_size")
    n_images = check_positive_int(n_images, "n_images")
    repeat = check_positive_int(repeat, "repeat")
    sizes = sorted({check_positive_int(b, "batch_sizes") for b in batch_sizes if b <= n_images})
    if not sizes:
        raise ValueError(
            f"No batch size in {list(batch_sizes)} is at most n_images={n_images}. "
            "Pass smaller batch sizes or more images."
        )
    key = machine_key(device=device, image_size=image_size)
    run = forward if forward is not None else _default_forward(device, weights)
    images = np.random.default_rng(0).random((n_images, image_size, image_size), np.float32)

    def best_rates(settings: list[TextureSetting]) -> dict[TextureSetting, float]:
        best = dict.fromkeys(settings, float("inf"))
        for setting in settings:  # warm-up (first calls allocate, pick kernels)
            run(setting, images[: setting.batch_size])
        for _ in range(repeat):
            for setting in settings:
                start = timer()
                run(setting, images)
                best[setting] = min(best[setting], max(timer() - start, 1e-12))
        return {s: n_images / t for s, t in best.items()}

    fp32 = best_rates([TextureSetting(b, cl) for b in sizes for cl in (False, True)])
    chosen = max(fp32, key=lambda s: fp32[s])
    cores = int(key["cores"] or 1)
    threads_rates: dict[int, float] = {}
    if key["device"] == "cpu" and cores > 1:
        candidates = [dataclasses.replace(chosen, threads=t) for t in _thread_counts(cores)]
        per = best_rates(candidates)
        threads_rates = {s.threads: r * cores / s.threads for s, r in per.items()}
        threads = max(threads_rates, key=lambda t: threads_rates[t])
    else:
        threads = cores if key["device"] == "cpu" else 1
    if time_bf16 is None:
        time_bf16 = fast_bf16(device) is not None
    bf16 = dataclasses.replace(chosen, channels_last=True, precision="bfloat16")
    both = best_rates([chosen, bf16]) if time_bf16 else {}  # side by side, same rounds
    measured = [
        {**dataclasses.asdict(s), "images_per_second": r} for s, r in {**fp32, **both}.items()
    ] + [
        {"threads": t, "images_per_second_per_core_set": r, "batch_size": chosen.batch_size}
        for t, r in threads_rates.items()
    ]
    calibration = TextureCalibration(
        batch_size=chosen.batch_size,
        channels_last=chosen.channels_last,
        threads=int(threads),
        images_per_second=float(fp32[chosen]),
        bf16_speedup=float(both[bf16] / both[chosen]) if both else None,
        key=key,
        measured=measured,
    )
    if save:
        _write(calibration, cache_dir)
    return calibration
