"""Reproduce the experiments of Lubbers, Lookman & Barros (2017) on synthetic textures.

``microscale paper`` calls :func:`run_paper`, which runs

- the angle task (Sec. IV B, Figs. 5-7): RMSE of the recovered orientation and stress at
  D* = 2 against the noise amplitude A, CNN and power spectrum (PS) side by side,
  averaged over trials;
- stress against embedding dimension (Fig. 8) for the angle task and the 3-D task;
- the 3-D task (Sec. IV C, Table I): R^2 of linear maps from the embedding to k and A at
  D* in {2, 3, 4, 5, 6, 10, 50}, and the angle between the regression vectors (Eq. 14);
- texture synthesis from one image (Fig. 1);
- optionally (``PaperConfig.backbones``, ``microscale paper --backbones``) the paper's open
  question: the angle task and the 3-D task for each backbone -- the normalised VGG-19,
  Ustyuzhaninov et al.'s random multi-scale network, torchvision's ImageNet VGG-19 when its
  weights are on the machine -- side by side (:func:`run_backbone_comparison`);

and writes xarray datasets (Zarr and netCDF), PNG figures and ``report.md`` into one folder.
The defaults finish in a few minutes on a 2-core CPU (images of 128 x 128, small N);
:meth:`PaperConfig.full` gives the paper's sizes for a GPU.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from microscale import synth
from microscale.results import (
    build_angle_dataset,
    build_dataset,
    build_stress_curves,
    build_synthesis_dataset,
    provenance,
    write_dataset,
)

__all__ = [
    "PaperConfig",
    "PaperResults",
    "describe",
    "embed",
    "run_backbone_comparison",
    "run_paper",
]

METHODS = ("cnn", "ps")
TASKS = ("angle", "stress", "grid", "synthesis")


@dataclass(frozen=True)
class PaperConfig:
    """Sizes and settings of the paper's experiments.

    Attributes
    ----------
    out : Path
        Output folder.
    tasks : tuple of str
        Experiments to run, any of ``"angle"`` (RMSE and stress vs A, Figs. 6-7),
        ``"stress"`` (stress vs dimension, Fig. 8: from the angle task's first trial and from
        the 3-D task when those run; alone it runs one angle-task trial per A), ``"grid"``
        (the 3-D task, Table I) and ``"synthesis"`` (Fig. 1).
    size : int
        Image side in pixels of the angle task and of the synthesis' family.
    grid_size : int
        Image side in pixels of the 3-D task (the paper's grid at 256: 1000 images in about
        6-10 minutes of texture vectors on a 2-core CPU).
    noise : str or microscale.synth.PerlinNoise
        Settings of the generator's displacement noise: a name in
        :data:`microscale.synth.NOISE_PRESETS` (``"calibrated"``, the default, or
        ``"by-eye"`` for the images of releases before the calibration) or explicit
        settings (the calibration's sensitivity study).
    angle_n : tuple of int
        Numbers of images N in the angle task.
    amplitudes : tuple of float
        Noise amplitudes A of the angle task.
    trials : int
        Independent trials (seeds) per (A, N).
    grid_n : int
        Values per axis of the 3-D task (grid_n**3 images; the paper: 10).
    grid_dims : tuple of int
        Embedding dimensions of the 3-D task.
    curve_dims : tuple of int
        Dimensions of the stress-vs-dimension curves.
    synthesis_size, synthesis_steps : int
        Image side and L-BFGS steps of the texture-synthesis figure (0 steps skips it).
    device : str or None
        Torch device; None picks the GPU when there is one.
    batch_size : int
        Images per forward pass of the network.
    weights : str
        Weights for :func:`microscale.texture_vectors`.
    seed : int
        Base seed; trial t uses ``seed + t``.
    backbones : tuple of str
        Networks to compare on the angle and 3-D tasks, each a ``weights=`` value:
        ``"vgg19-normalized"``, ``"random"`` / ``"random:SEED"``, ``"vgg19-imagenet"``, a
        path. Empty (the default) skips the comparison: the random network costs several
        times the VGG-19's time per image on a CPU (1024-map Gram matrices), so it is opt-in.
        The entry equal to ``weights`` reuses the main run's numbers.
    """

    out: Path = Path("paper-out")
    tasks: tuple[str, ...] = TASKS
    size: int = 128
    grid_size: int = 256
    noise: str | synth.PerlinNoise = "calibrated"
    angle_n: tuple[int, ...] = (50,)
    amplitudes: tuple[float, ...] = tuple(float(a) for a in np.arange(0, 5.01, 0.5))
    trials: int = 10
    grid_n: int = 10
    grid_dims: tuple[int, ...] = (2, 3, 4, 5, 6, 10, 50)
    curve_dims: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50)
    synthesis_size: int = 64
    synthesis_steps: int = 30
    device: str | None = None
    batch_size: int = 8
    weights: str = "vgg19-normalized"
    seed: int = 0
    backbones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(
                f"The 'tasks' parameter must be a non-empty subset of {', '.join(TASKS)}. "
                f"Got {', '.join(self.tasks) or 'nothing'} instead."
            )
        synth.resolve_noise(self.noise)  # an unknown preset fails before any work

    @classmethod
    def full(cls, **overrides: Any) -> PaperConfig:
        """The paper's sizes everywhere: 256 x 256 images, N up to 200 in the angle task
        with 100 trials, 11 amplitudes, and the 1000-image 3-D task. Meant for a GPU."""
        base = cls(
            size=256,
            grid_size=256,
            angle_n=(50, 100, 200),
            trials=100,
            synthesis_size=256,
            synthesis_steps=100,
            batch_size=32,
        )
        return replace(base, **overrides)


@dataclass
class PaperResults:
    """Datasets and files written by :func:`run_paper`."""

    angle: xr.Dataset | None
    angle_stress: xr.Dataset | None
    grid: xr.Dataset | None
    synthesis: xr.Dataset | None
    files: list[Path]
    report: Path
    timings: dict[str, float]
    backbone_angle: xr.Dataset | None = None
    backbone_grid: xr.Dataset | None = None
    backbones_unavailable: dict[str, str] | None = None


def describe(images: np.ndarray, *, method: str, config: PaperConfig) -> np.ndarray:
    """Descriptors of images: ``"cnn"`` texture vectors (``config.weights``), ``"ps"``
    power spectra, or ``"cnn:WEIGHTS"`` texture vectors of another backbone."""
    if method == "cnn" or method.startswith("cnn:"):
        from microscale.texture import texture_vectors

        weights = config.weights if method == "cnn" else method[4:]
        return texture_vectors(
            images, weights=weights, device=config.device, batch_size=config.batch_size
        )
    if method == "ps":
        from microscale.spectrum import power_spectra

        return power_spectra(images)
    raise ValueError(
        f"The 'method' parameter must be 'cnn', 'cnn:WEIGHTS' or 'ps'. Got {method!r} instead."
    )


def embed(
    D: np.ndarray, n_components: Sequence[int], *, config: PaperConfig
) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """MDS embeddings and their stress for every dimension in ``n_components`` below N."""
    from microscale.metric_mds import mds, stress

    dims = sorted({int(d) for d in n_components if d < len(D)})
    emb = mds(D, dims, random_state=config.seed, device=config.device)
    return emb, {d: stress(D, emb[d]) for d in dims}


def _distances(features: np.ndarray) -> np.ndarray:
    from microscale.distance import pairwise_distances

    return pairwise_distances(features)


def run_angle_task(
    config: PaperConfig,
    *,
    tick: Callable[[str], None] = lambda s: None,
    methods: Sequence[str] = METHODS,
) -> tuple[xr.Dataset, xr.Dataset]:
    """The angle task: RMSE and stress vs A for each N and trial; stress vs D* per A.

    ``methods`` are :func:`describe` methods; they label the ``descriptor`` axis.
    """
    from microscale.evaluate import angle_rmse

    methods = tuple(methods)
    shape = (len(methods), len(config.amplitudes), len(config.angle_n), config.trials)
    rmse, stress2 = np.full(shape, np.nan), np.full(shape, np.nan)
    n0 = config.angle_n[0]
    emb2 = np.full((len(methods), len(config.amplitudes), n0, 2), np.nan)
    curve_dims = sorted(d for d in config.curve_dims if d < n0)
    curve = np.full((len(methods), len(config.amplitudes), len(curve_dims)), np.nan)
    theta0 = None
    for a_i, amp in enumerate(config.amplitudes):
        for n_i, n in enumerate(config.angle_n):
            for t in range(config.trials):
                data = synth.angle_dataset(
                    n, A=amp, size=config.size, seed=config.seed + t, noise=config.noise
                )
                first = n_i == 0 and t == 0
                for m_i, method in enumerate(methods):
                    D = _distances(describe(data.images, method=method, config=config))
                    dims = curve_dims if first else [2]
                    emb, st = embed(D, dims, config=config)
                    rmse[m_i, a_i, n_i, t] = angle_rmse(emb[2], data.theta)
                    stress2[m_i, a_i, n_i, t] = st[2]
                    if first:
                        emb2[m_i, a_i] = emb[2]
                        curve[m_i, a_i] = [st[d] for d in curve_dims]
                        theta0 = data.theta
                tick(f"angle task A={amp:g} N={n} trial {t + 1}/{config.trials} done")
    attrs = provenance(parameters=_params(config), weights_sha256=_weights_sha(config))
    angle = build_angle_dataset(
        rmse=rmse,
        stress=stress2,
        embedding_2d=emb2,
        theta=theta0,
        descriptors=methods,
        amplitudes=config.amplitudes,
        n_images=config.angle_n,
        attrs={**attrs, "title": "Angle task (Lubbers et al. 2017, Sec. IV B)"},
    )
    angle_stress = build_stress_curves(
        stress=curve,
        descriptors=methods,
        amplitudes=config.amplitudes,
        n_components=curve_dims,
        attrs={**attrs, "title": f"Angle task, N={n0}, trial 0: stress vs dimension"},
    )
    return angle, angle_stress


def run_grid_task(
    config: PaperConfig,
    *,
    tick: Callable[[str], None] = lambda s: None,
    methods: Sequence[str] = METHODS,
) -> xr.Dataset:
    """The 3-D task: embed the (theta, k, A) grid; R^2 for k and A; regression angle.

    ``methods`` are :func:`describe` methods; they label the ``descriptor`` axis.
    """
    from microscale.evaluate import r_squared, regression_angle

    methods = tuple(methods)
    data = synth.grid_dataset(
        config.grid_n, size=config.grid_size, seed=config.seed, noise=config.noise
    )
    n = len(data)
    dims = sorted({d for d in (*config.grid_dims, *config.curve_dims) if d < n})
    embeddings, stresses = {}, {}
    for method in methods:
        D = _distances(describe(data.images, method=method, config=config))
        embeddings[method], stresses[method] = embed(D, dims, config=config)
        tick(f"3-D task: {method} embedding of {n} images done")
    targets = ("k", "A")
    r2 = np.array(
        [
            [[r_squared(embeddings[m][d], data.params[p]) for p in targets] for d in dims]
            for m in methods
        ]
    )
    angle = np.array(
        [[regression_angle(embeddings[m][d], data.A, data.k) for d in dims] for m in methods]
    )
    attrs = provenance(parameters=_params(config), weights_sha256=_weights_sha(config))
    attrs["title"] = "3-D task (Lubbers et al. 2017, Sec. IV C, Table I)"
    return build_dataset(
        embeddings=embeddings,
        stress=stresses,
        params=data.params,
        images=data.images.astype(np.float32),
        metrics={
            "r2": (
                ("descriptor", "n_components", "parameter"),
                r2,
                {"long_name": "coefficient of determination of OLS (Eq. 13)"},
            ),
            "regression_angle": (
                ("descriptor", "n_components"),
                angle,
                {"long_name": "angle between beta_A and beta_k (Eq. 14)", "units": "degree"},
            ),
        },
        coords={"parameter": list(targets)},
        attrs=attrs,
    )


def run_synthesis(config: PaperConfig) -> xr.Dataset:
    """Fig. 1: synthesise a texture from one image of the 3-D task's family."""
    from microscale.synthesis import synthesize_texture

    theta, k, amp = np.pi / 3, 6.0, 1.5
    original = synth.texture(
        theta, k, amp, size=config.synthesis_size, seed=config.seed, noise=config.noise
    )
    res = synthesize_texture(
        original,
        steps=config.synthesis_steps,
        random_state=config.seed,
        weights=config.weights,
        device=config.device,
        progress=True,
    )
    attrs = provenance(parameters=_params(config), weights_sha256=_weights_sha(config))
    attrs.update(title="Texture synthesis from one image (Fig. 1)", theta=theta, k=k, A=amp)
    return build_synthesis_dataset(
        original=(original + 1) / 2, synthesized=res.image, loss=res.loss, attrs=attrs
    )


def _params(config: PaperConfig) -> dict[str, Any]:
    params = asdict(config)
    params["out"] = str(config.out)
    params["normalization"] = "minmax"
    from microscale.texture import backbone_layers

    params["layers"] = list(backbone_layers(config.weights))
    params["perlin"] = synth.resolve_noise(config.noise).as_dict()
    return params


def _weights_sha(config: PaperConfig) -> str:
    return _sha_of(config.weights)


@functools.lru_cache(maxsize=8)
def _sha_of(weights: str) -> str:
    from microscale.backbones import describe_backbone

    return describe_backbone(weights).sha256


def run_backbone_comparison(
    config: PaperConfig,
    *,
    angle: xr.Dataset | None = None,
    grid: xr.Dataset | None = None,
    tick: Callable[[str], None] = lambda s: None,
) -> tuple[xr.Dataset | None, xr.Dataset | None, dict[str, str]]:
    """The angle task and the 3-D task for each of ``config.backbones``, side by side.

    Answers the paper's closing question (would a random network do as well as the trained
    VGG-19?) with the paper's own metrics: angle RMSE and stress at D* = 2 per A, and R^2
    for k and A per D*. The power spectrum is kept as the reference row.

    Parameters
    ----------
    config : PaperConfig
        Sizes, seeds and ``backbones`` (``weights=`` values).
    angle, grid : xr.Dataset, optional
        The main run's results: the backbone equal to ``config.weights`` and the power
        spectrum are taken from them instead of being computed again.
    tick : callable, optional
        Progress callback.

    Returns
    -------
    angle, grid : xr.Dataset or None
        As :func:`run_angle_task` and :func:`run_grid_task`, with the backbone names (and
        ``"ps"``) on the ``descriptor`` axis; None when no backbone is available.
    unavailable : dict of str to str
        Backbones that could not be loaded here, with the reason and how to provide them.
    """
    from microscale.backbones import describe_backbone
    from microscale.weights import WeightsUnavailableError

    names, unavailable, shas = [], {}, {}
    for name in dict.fromkeys(config.backbones):
        try:
            shas[name] = describe_backbone(name).sha256
        except WeightsUnavailableError as exc:
            unavailable[name] = str(exc)
            continue
        names.append(name)
    if not names:
        return None, None, unavailable
    reuse = angle is not None and grid is not None
    todo = [n for n in names if not (reuse and n == config.weights)]
    methods = [f"cnn:{n}" for n in todo] + ([] if reuse else ["ps"])
    parts_angle, parts_grid = [], []
    if methods:
        a_ds, _ = run_angle_task(config, tick=tick, methods=methods)
        g_ds = run_grid_task(config, tick=tick, methods=methods)
        label = {m: m[4:] if m.startswith("cnn:") else m for m in methods}
        parts_angle.append(a_ds.assign_coords(descriptor=[label[m] for m in methods]))
        parts_grid.append(g_ds.assign_coords(descriptor=[label[m] for m in methods]))
    if reuse:
        keep = ["cnn", "ps"] if config.weights in names else ["ps"]
        rename = {"cnn": config.weights, "ps": "ps"}
        for ds, out in ((angle, parts_angle), (grid, parts_grid)):
            sub = ds.sel(descriptor=keep)
            out.append(sub.assign_coords(descriptor=[rename[str(d)] for d in keep]))
    order = [*names, "ps"]
    attrs = {
        "title": "Backbones on the angle task and the 3-D task (the paper's open question)",
        "backbones": json.dumps(names),
        "backbones_sha256": json.dumps(shas),
        "backbones_unavailable": json.dumps(unavailable),
    }
    out_angle = xr.concat(parts_angle, dim="descriptor", combine_attrs="drop_conflicts")
    out_grid = xr.concat(
        [g.drop_vars("image_data", errors="ignore") for g in parts_grid],
        dim="descriptor",
        combine_attrs="drop_conflicts",
    )
    out_angle = out_angle.sel(descriptor=order).assign_attrs(attrs)
    out_grid = out_grid.sel(descriptor=order).assign_attrs(attrs)
    return out_angle, out_grid, unavailable


def run_paper(config: PaperConfig, *, progress: bool = True) -> PaperResults:
    """Run ``config.tasks`` and write datasets, figures and ``report.md`` to ``config.out``."""
    from microscale import plots
    from microscale.report import write_report

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _weights_sha(config)  # fetch (with its own progress bar) before the clock starts
    tasks = set(config.tasks)
    # "stress" alone: the stress-vs-dimension curves need one angle-task trial per A only
    angle_config = (
        config if "angle" in tasks else replace(config, trials=1, angle_n=config.angle_n[:1])
    )
    run_angle = bool(tasks & {"angle", "stress"})
    compare = bool(config.backbones) and run_angle and "grid" in tasks
    n_extra = len(set(config.backbones) - {config.weights}) if compare else 0
    n_steps = (
        len(config.amplitudes) * len(angle_config.angle_n) * angle_config.trials * run_angle
        + ("grid" in tasks) * 2
    ) * (1 + (n_extra > 0))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc="paper", unit="step")

    def tick(msg: str) -> None:
        if bar is not None:
            bar.set_postfix_str(msg)
            bar.update(1)

    timings: dict[str, float] = {}
    angle = angle_stress = grid = None
    if run_angle:
        t0 = time.perf_counter()
        angle, angle_stress = run_angle_task(angle_config, tick=tick)
        timings["angle task" if "angle" in tasks else "angle task (1 trial, for Fig. 8)"] = (
            time.perf_counter() - t0
        )
        if "angle" not in tasks:
            angle = None
        if "stress" not in tasks:
            angle_stress = None
    if "grid" in tasks:
        t0 = time.perf_counter()
        grid = run_grid_task(config, tick=tick)
        timings["3-D task"] = time.perf_counter() - t0
    backbone_angle = backbone_grid = None
    unavailable: dict[str, str] = {}
    if compare:
        t0 = time.perf_counter()
        backbone_angle, backbone_grid, unavailable = run_backbone_comparison(
            config, angle=angle, grid=grid, tick=tick
        )
        timings["backbone comparison"] = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    synthesis = None
    if "synthesis" in tasks and config.synthesis_steps > 0:
        t0 = time.perf_counter()
        synthesis = run_synthesis(config)
        timings["texture synthesis"] = time.perf_counter() - t0

    files: list[Path] = []
    for name, ds in [
        ("angle_task", angle),
        ("angle_stress", angle_stress),
        ("grid_task", grid),
        ("synthesis", synthesis),
        ("backbones_angle", backbone_angle),
        ("backbones_grid", backbone_grid),
    ]:
        if ds is not None:
            files.extend(write_dataset(ds, out / name))
    if angle is not None:
        files += [
            plots.plot_angle_curves(angle, out / "angle_rmse_stress.png"),
            plots.plot_angle_embeddings(angle, out / "angle_embeddings.png"),
        ]
    if angle_stress is not None:
        a_mid = angle_stress.A.values[len(angle_stress.A) // 2]
        angle_curve = angle_stress.sel(A=a_mid).assign_attrs(
            title=f"Angle task, N={config.angle_n[0]}, A={a_mid:g}: stress vs dimension"
        )
        files.append(
            plots.plot_stress_vs_dimension(angle_curve, out / "angle_stress_vs_dimension.png")
        )
    if grid is not None:
        if "stress" in tasks:
            grid_curve = grid.stress.to_dataset(name="stress").assign_attrs(
                title=f"3-D task, N={grid.sizes['image']}: stress vs dimension"
            )
            files.append(
                plots.plot_stress_vs_dimension(grid_curve, out / "grid_stress_vs_dimension.png")
            )
        files.append(plots.plot_grid_embedding(grid, out / "grid_embedding.png"))
    if synthesis is not None:
        files.append(plots.plot_synthesis(synthesis, out / "synthesis.png"))
    report = write_report(
        out / "report.md",
        config=config,
        angle=angle,
        angle_stress=angle_stress,
        grid=grid,
        synthesis=synthesis,
        timings=timings,
        files=files,
        backbone_angle=backbone_angle,
        backbone_grid=backbone_grid,
        backbones_unavailable=unavailable if compare else None,
    )
    return PaperResults(
        angle,
        angle_stress,
        grid,
        synthesis,
        files,
        report,
        timings,
        backbone_angle=backbone_angle,
        backbone_grid=backbone_grid,
        backbones_unavailable=unavailable if compare else None,
    )
