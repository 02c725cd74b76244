"""Synthetic stripe textures and the paper's datasets (Lubbers et al. 2017, Sec. IV A).

A texture is the scalar field (Eq. 9 of the paper)

    phi(r) = cos(2 pi k u . n_theta),    u = r + A h(r),

on the unit square ``r = (x, y) in [0, 1)^2`` (lengths in units of the image side), with
``n_theta = (cos theta, sin theta)``, ``k`` the number of stripes per image side, ``A`` the
noise amplitude and ``h = (h_x, h_y)`` a smooth multi-scale (fractal) Perlin noise, one
independent field per displacement component.

Coordinates
-----------
An image of ``size`` pixels per side samples the field at ``r = (x / size, y / size)`` for
column index ``x`` and row index ``y`` (``image[y, x]``, row 0 at the top, so the y axis points
down). ``theta`` is the angle of the wave vector ``k n_theta`` measured from the +x axis
(columns, to the right) towards the +y axis (rows, downwards): counter-clockwise in the
usual mathematical (x, y) frame, which on a screen with row 0 at the top looks clockwise.
The stripes run perpendicular to ``n_theta``. For ``A = 0`` the 2-D FFT of the image
(``np.fft.fft2(image)``, axis 0 = y, axis 1 = x) peaks at the frequency
``(f_y, f_x) = +-(k sin theta, k cos theta)`` cycles per image side.

Because the noise is defined in the continuous coordinate ``r``, the same
``(theta, k, A, seed)`` gives the same pattern at every ``size``:
``texture(..., size=128)`` equals ``texture(..., size=256)[::2, ::2]``.

Noise
-----
Each displacement component is a sum of ``octaves`` octaves of 2-D gradient (Perlin) noise,
periodic on the unit square (the lattice wraps around), so ``h`` tiles seamlessly and has no
edge artefacts:

    h_c(r) = amplitude * sum_{o=0}^{O-1} persistence**o
             * perlin(base_lattice * lacunarity**o * r; gradients_{c,o})

with ``O = octaves`` (the fields of :class:`PerlinNoise`). ``perlin`` is classic gradient
noise: unit gradient vectors at random angles (uniform in [0, 2 pi)) on an ``L x L``
periodic lattice, dot products with the offsets to the four cell corners, blended with the
quintic fade ``6t^5 - 15t^4 + 10t^3``. The lattice gradients come from
``np.random.default_rng(seed)``, split with ``spawn(2)`` into independent streams for
``h_x`` and ``h_y``; octave ``o`` draws its ``L_o x L_o`` angles after those of octaves
``0 .. o-1``.

Calibration (:data:`DEFAULT_NOISE`)
-----------------------------------
The paper states none of h's settings. They are fixed by what it states about the angle
task (k = 15, N = 50): the power spectrum (PS) recovers the angles only for
2 <~ A <~ 3.5 (Fig. 6), the CNN up to A ~ 4.5 and worse beyond, the D* = 2 stress of
both grows with A (Fig. 7), the PS peak power falls steeply with A (Fig. 4).
``benchmarks/calibrate_generator.py`` sweeps them in two stages (``docs/reproduction.md``
has both tables):

1. The amplitude only rescales the A axis, so each *structure* (lattice, octaves,
   persistence, components) has a PS window of fixed width; with the window defined as
   mean RMSE < 0.1 rad over 6 trials, its width ``A_hi / A_lo`` ranged from 1.6 to 4.8
   over 35 structures (independent components; shared components never reached 0.1).
   Coarse multi-octave noise (4-cell lattice and coarser) gives widths of 3-5: the
   setting before the calibration (``NOISE_BY_EYE``) had 4.0, a window of about
   1.8 <= A <= 6.8 instead of the paper's 2-3.5.
2. The five multi-octave structures (the paper calls h "multi-scale") closest to the
   paper's width 1.75, with the amplitude that puts their window on [2, 3.5], ran the
   angle task with the CNN (4 trials, A = 0..6), and so did two single-octave ones. The
   best by the summed log-distance to the stated windows and the rank correlation of
   stress with A (0 < A <= 5: the A = 0 images do not depend on the noise) is

   - ``base_lattice = 8``, ``octaves = 3`` (lattices of 8, 16 and 32 cells per side:
     cells of 32, 16 and 8 pixels at size 256, against a stripe period of 17 pixels at
     k = 15), ``lacunarity = 2``, ``persistence = 0.7``, independent components,
   - ``amplitude = 0.028``: the RMS of ``|grad (h . n)|`` is 0.50 per unit of A, so the
     local wave vector of the stripes is perturbed by 100 % (RMS) at A = 2.

   At 128 x 128 it gives a PS window of 1.94-3.33, a CNN good to A = 4.40, a PS stress
   rising with A and a PS peak power falling 1 : 5 : 50 from A = 1 to 2 to 3.

The 3-D task was not used to choose; it is the validation (``docs/reproduction.md``).
``noise="by-eye"`` (:data:`NOISE_BY_EYE`: lattice 4, 3 octaves, persistence 0.5,
amplitude 0.035, chosen by eye on image grids) regenerates the images of earlier releases.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "DEFAULT_NOISE",
    "NOISE_BY_EYE",
    "NOISE_PRESETS",
    "PerlinNoise",
    "PERLIN_AMPLITUDE",
    "PERLIN_BASE_LATTICE",
    "PERLIN_LACUNARITY",
    "PERLIN_OCTAVES",
    "PERLIN_PERSISTENCE",
    "SynthDataset",
    "angle_dataset",
    "displacement_strain",
    "grid_dataset",
    "resolve_noise",
    "texture",
]

# the calibrated default's settings, one name each (DEFAULT_NOISE holds them together)
PERLIN_BASE_LATTICE = 8
PERLIN_OCTAVES = 3
PERLIN_LACUNARITY = 2
PERLIN_PERSISTENCE = 0.7
PERLIN_AMPLITUDE = 0.028

_MIN_SIZE = 16
# salts that keep the per-image seeds of different dataset builders apart
_ANGLE_SALT = 1
_GRID_SALT = 2


# --------------------------------------------------------------------------- validation


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < _MIN_SIZE:
        raise ValueError(
            f"The 'size' parameter must be an int >= {_MIN_SIZE}. Got {size!r} instead."
        )
    return int(size)


def _check_seed(seed: object, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"The '{name}' parameter must be an int >= 0. Got {seed!r} instead.")
    return int(seed)


def _check_count(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {n!r} instead.")
    return int(n)


def _check_real(value: object, name: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"The '{name}' parameter must be a real number. Got {value!r} instead.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"The '{name}' parameter must be finite. Got {value!r} instead.")
    if minimum is not None and value < minimum:
        raise ValueError(f"The '{name}' parameter must be >= {minimum:g}. Got {value!r} instead.")
    return value


def _check_range(value: object, name: str) -> tuple[float, float]:
    try:
        lo, hi = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(
            f"The '{name}' parameter must be a pair (lo, hi). Got {value!r} instead."
        ) from None
    lo = _check_real(lo, f"{name}[0]")
    hi = _check_real(hi, f"{name}[1]")
    if not lo < hi:
        raise ValueError(f"The '{name}' parameter must satisfy lo < hi. Got {value!r} instead.")
    return lo, hi


# --------------------------------------------------------------------------- noise


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _perlin(gx: np.ndarray, gy: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Periodic 2-D gradient (Perlin) noise sampled on a square grid.

    Parameters
    ----------
    gx, gy : (L, L) ndarray
        Components of the gradient vectors at the lattice points, indexed ``[iy, ix]``;
        the lattice wraps around (periodic on the unit square).
    coords : (S,) ndarray
        Sample positions, used for both x (columns) and y (rows); the noise has period 1.

    Returns
    -------
    (S, S) ndarray
        The noise at ``(x, y) = (coords[j], coords[i])`` in entry ``[i, j]``.

    Notes
    -----
    Classic Perlin noise at a point with cell offsets ``(tx, ty)`` in [0, 1) is the
    fade-weighted bilinear blend, with weights ``(1 - w, w)``, ``w = fade(t)``, of
    ``g . (tx - cx, ty - cy)`` over the four corners ``(cx, cy)`` of its cell. Every term
    factorises into a row weight times a column weight, so the grid is
    ``P @ gx @ R.T + R @ gy @ P.T`` with the sparse (S, L) matrices ``P`` (weights
    ``1 - w`` and ``w`` on the two neighbouring lattice lines) and ``R`` (the same times the
    offsets ``t`` and ``t - 1``). The products are done as gathers (two nonzeros per row):
    no per-pixel loop and no BLAS threads. The noise is linear in the gradients, which lets
    the caller combine fields that share a lattice.
    """
    lattice = gx.shape[0]
    scaled = coords * lattice
    i0 = np.floor(scaled).astype(np.intp)
    t = scaled - i0
    i0 %= lattice
    i1 = (i0 + 1) % lattice
    w = _fade(t)
    p0, p1 = 1.0 - w, w
    r0, r1 = p0 * t, p1 * (t - 1.0)
    # left factors, (S, L): rows of the lattice blended along y
    left_x = p0[:, None] * gx[i0] + p1[:, None] * gx[i1]
    left_y = r0[:, None] * gy[i0] + r1[:, None] * gy[i1]
    # right factors: blend the lattice columns along x
    return (
        np.take(left_x, i0, axis=1) * r0
        + np.take(left_x, i1, axis=1) * r1
        + np.take(left_y, i0, axis=1) * p0
        + np.take(left_y, i1, axis=1) * p1
    )


@dataclass(frozen=True)
class PerlinNoise:
    """Settings of the displacement noise h(r) of :func:`texture`.

    The paper does not state them; :data:`DEFAULT_NOISE` is fixed by the calibration
    against its angle-task figures (module docstring, ``docs/reproduction.md``).

    Attributes
    ----------
    amplitude : float
        Weight of the coarsest octave, in image sides per unit of ``A`` (> 0).
    base_lattice : int
        Lattice cells per image side of the coarsest octave (>= 1).
    octaves : int
        Number of octaves (>= 1); octave ``o`` has ``base_lattice * lacunarity**o`` cells.
    lacunarity : int
        Lattice refinement between octaves (an integer >= 2 keeps every octave periodic).
    persistence : float
        Weight ratio between successive octaves (> 0).
    components : {"independent", "shared"}
        ``"independent"``: h_x and h_y are independent fields (the default).
        ``"shared"``: both components are the same field, h = (h, h), as a naive
        ``u = r + A * noise(r)`` on both coordinates gives; the displacement along the wave
        vector then depends on theta (zero at theta = 3 pi / 4).
    """

    amplitude: float
    base_lattice: int = 4
    octaves: int = 3
    lacunarity: int = 2
    persistence: float = 0.5
    components: str = "independent"

    def __post_init__(self) -> None:
        _check_real(self.amplitude, "amplitude", minimum=0.0)
        if self.amplitude <= 0.0:
            raise ValueError(
                f"The 'amplitude' parameter must be > 0. Got {self.amplitude!r} instead."
            )
        _check_count(self.base_lattice, "base_lattice")
        _check_count(self.octaves, "octaves")
        if _check_count(self.lacunarity, "lacunarity") < 2:
            raise ValueError(
                f"The 'lacunarity' parameter must be an int >= 2. Got {self.lacunarity!r} instead."
            )
        if _check_real(self.persistence, "persistence", minimum=0.0) <= 0.0:
            raise ValueError(
                f"The 'persistence' parameter must be > 0. Got {self.persistence!r} instead."
            )
        if self.components not in ("independent", "shared"):
            raise ValueError(
                "The 'components' parameter must be 'independent' or 'shared'. "
                f"Got {self.components!r} instead."
            )

    def as_dict(self) -> dict[str, object]:
        """The settings as plain values (for provenance records)."""
        return asdict(self)


#: The setting of the first releases, chosen by eye on image grids (before calibration).
NOISE_BY_EYE = PerlinNoise(amplitude=0.035, base_lattice=4, octaves=3, persistence=0.5)

#: The generator's default, fixed by the angle-task calibration (see the module docstring).
DEFAULT_NOISE = PerlinNoise(
    amplitude=PERLIN_AMPLITUDE,
    base_lattice=PERLIN_BASE_LATTICE,
    octaves=PERLIN_OCTAVES,
    lacunarity=PERLIN_LACUNARITY,
    persistence=PERLIN_PERSISTENCE,
)

#: Named settings accepted wherever a ``noise`` parameter is.
NOISE_PRESETS: dict[str, PerlinNoise] = {"calibrated": DEFAULT_NOISE, "by-eye": NOISE_BY_EYE}


def resolve_noise(noise: PerlinNoise | str | None) -> PerlinNoise:
    """The :class:`PerlinNoise` meant by a ``noise`` parameter: None is
    :data:`DEFAULT_NOISE`, a string names one of :data:`NOISE_PRESETS`."""
    if noise is None:
        return DEFAULT_NOISE
    if isinstance(noise, PerlinNoise):
        return noise
    if isinstance(noise, str) and noise in NOISE_PRESETS:
        return NOISE_PRESETS[noise]
    raise ValueError(
        "The 'noise' parameter must be a PerlinNoise, None or one of "
        f"{sorted(NOISE_PRESETS)}. Got {noise!r} instead."
    )


def _gradient_angles(rng: np.random.Generator, noise: PerlinNoise) -> list[np.ndarray]:
    """The gradient angles of every octave of one displacement component, (L_o, L_o) each."""
    angles = []
    lattice = noise.base_lattice
    for _ in range(noise.octaves):
        angles.append(rng.uniform(0.0, 2.0 * np.pi, size=(lattice, lattice)))
        lattice *= noise.lacunarity
    return angles


def _displacement_along(
    seed: int, coords: np.ndarray, nx: float, ny: float, noise: PerlinNoise | None = None
) -> np.ndarray:
    """The projection h . n = nx h_x + ny h_y of the displacement field, (S, S).

    With independent components, h_x and h_y are fractal Perlin fields with gradients from
    the two streams of ``np.random.default_rng(seed).spawn(2)``. Perlin noise is linear in its
    gradients, so nx h_x + ny h_y is evaluated as one noise per octave whose gradients are
    nx g_x + ny g_y. With shared components both are the field of the first stream.
    """
    noise = DEFAULT_NOISE if noise is None else noise
    rng_x, rng_y = np.random.default_rng(seed).spawn(2)
    angles_x = _gradient_angles(rng_x, noise)
    angles_y = angles_x if noise.components == "shared" else _gradient_angles(rng_y, noise)
    total = np.zeros((coords.size, coords.size))
    weight = noise.amplitude
    for ax, ay in zip(angles_x, angles_y, strict=True):
        gx = nx * np.cos(ax) + ny * np.cos(ay)
        gy = nx * np.sin(ax) + ny * np.sin(ay)
        total += weight * _perlin(gx, gy, coords)
        weight *= noise.persistence
    return total


def displacement_strain(
    noise: PerlinNoise | str | None = None, *, size: int = 256, seeds: int = 16
) -> float:
    """RMS of |grad (h . n)| per unit of A: how much the noise bends the stripes.

    The local wave vector of ``texture`` is ``k (n + A grad(h . n))``, so this is the RMS
    relative perturbation of the stripes' wave vector per unit of ``A`` (dimensionless).
    The calibration measures the power-spectrum window in these units (module docstring).

    Parameters
    ----------
    noise : PerlinNoise, str or None, optional
        Settings of h, as in :func:`texture`.
    size : int, optional
        Grid on which the gradient is taken by finite differences (>= 16); 256 resolves
        the default noise's finest octave (8 pixels per cell).
    seeds : int, optional
        Number of noise fields averaged, each with its own direction n (>= 1).

    Returns
    -------
    float
        ``sqrt(mean |grad (h . n)|^2)`` over the unit square and the seeds.

    Examples
    --------
    >>> round(displacement_strain(size=64, seeds=2), 1) > 0
    True
    """
    noise = resolve_noise(noise)
    size = _check_size(size)
    seeds = _check_count(seeds, "seeds")
    coords = np.arange(size) / size
    total = 0.0
    for s in range(seeds):
        theta = np.pi * (s + 0.5) / seeds
        h = _displacement_along(s, coords, math.cos(theta), math.sin(theta), noise)
        gy, gx = np.gradient(h, 1.0 / size)
        total += float(np.mean(gx**2 + gy**2))
    return math.sqrt(total / seeds)


# --------------------------------------------------------------------------- public API


def texture(
    theta: float,
    k: float,
    A: float,
    *,
    size: int = 256,
    seed: int = 0,
    noise: PerlinNoise | str | None = None,
) -> np.ndarray:
    """A noisy stripe texture, phi(r) = cos(2 pi k (r + A h(r)) . n_theta).

    Parameters
    ----------
    theta : float
        Angle of the stripes' wave vector in radians, from the +x axis (columns) towards the
        +y axis (rows, pointing down). Any finite value; the paper uses [0, pi).
    k : float
        Number of stripes per image side (the wave number in cycles per side), >= 0.
    A : float
        Noise amplitude, >= 0. ``A = 0`` gives perfect stripes; the calibrated noise
        puts the paper's angle-task windows at A of 2-3.5 (PS) and ~4.5 (CNN).
    size : int, optional
        Side of the square image in pixels, >= 16.
    seed : int, optional
        Seed (>= 0) of the Perlin lattice gradients. Ignored when ``A = 0``.
    noise : PerlinNoise, str or None, optional
        Settings of h: None (:data:`DEFAULT_NOISE`, the calibrated setting), a
        :class:`PerlinNoise`, or a name in :data:`NOISE_PRESETS` (``"by-eye"`` regenerates the
        images of releases before the calibration).

    Returns
    -------
    phi : (size, size) ndarray of float64
        The field in [-1, 1], indexed ``phi[y, x]`` at ``r = (x / size, y / size)``.

    Raises
    ------
    ValueError
        If a parameter is out of range or not finite.

    Notes
    -----
    The noise ``h`` is periodic on the unit square and defined in the continuous
    coordinate ``r``, so the pattern does not depend on ``size`` beyond its sampling. See the
    module docstring for the noise constants and the angle convention.

    References
    ----------
    N. Lubbers, T. Lookman, K. Barros, Phys. Rev. E 96, 052111 (2017), Eq. 9,
    doi:10.1103/PhysRevE.96.052111.

    Examples
    --------
    >>> import numpy as np
    >>> phi = texture(np.pi / 4, 15, 2.0, size=64, seed=3)
    >>> phi.shape, phi.dtype
    ((64, 64), dtype('float64'))
    """
    theta = _check_real(theta, "theta")
    k = _check_real(k, "k", minimum=0.0)
    A = _check_real(A, "A", minimum=0.0)
    size = _check_size(size)
    seed = _check_seed(seed)
    noise = resolve_noise(noise)

    coords = np.arange(size) / size
    nx, ny = math.cos(theta), math.sin(theta)
    # u . n = r . n + A h . n, with x along columns (axis 1) and y along rows (axis 0)
    phase = coords[None, :] * nx + coords[:, None] * ny
    if A > 0.0:
        phase = phase + A * _displacement_along(seed, coords, nx, ny, noise)
    return np.cos(2.0 * np.pi * k * phase)


@dataclass(frozen=True)
class SynthDataset:
    """Synthetic images with the parameters that made them.

    Attributes
    ----------
    images : (n, size, size) ndarray of float64
        ``images[i] == texture(theta[i], k[i], A[i], size=size, seed=int(seed[i]))``.
    theta, k, A : (n,) ndarray of float64
        Per-image parameters.
    seed : (n,) ndarray of int64
        Per-image seeds.
    """

    images: np.ndarray
    theta: np.ndarray
    k: np.ndarray
    A: np.ndarray
    seed: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The per-image parameters, name -> (n,) array (``theta``, ``k``, ``A``, ``seed``)."""
        return {"theta": self.theta, "k": self.k, "A": self.A, "seed": self.seed}


def _image_seeds(seed: int, n: int, salt: int) -> np.ndarray:
    """n per-image seeds in [0, 2**63), (n,) int64; entry i depends only on (seed, salt, i)."""
    state = np.random.SeedSequence(seed, spawn_key=(salt,)).generate_state(n, np.uint64)
    return (state >> np.uint64(1)).astype(np.int64)


def _render(
    theta: np.ndarray,
    k: np.ndarray,
    A: np.ndarray,
    seeds: np.ndarray,
    *,
    size: int,
    progress: bool,
    desc: str,
    noise: PerlinNoise,
) -> SynthDataset:
    n = theta.size
    images = np.empty((n, size, size))
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=desc, unit="image")
    for i in indices:
        images[i] = texture(theta[i], k[i], A[i], size=size, seed=int(seeds[i]), noise=noise)
    return SynthDataset(images=images, theta=theta, k=k, A=A, seed=seeds)


def angle_dataset(
    n: int,
    *,
    A: float,
    k: float = 15,
    size: int = 256,
    seed: int = 0,
    noise: PerlinNoise | str | None = None,
    progress: bool = False,
) -> SynthDataset:
    """The paper's angle task: n textures with theta_i = i pi / n, one k and one A.

    Parameters
    ----------
    n : int
        Number of images, >= 1.
    A : float
        Noise amplitude shared by all images, >= 0.
    k : float, optional
        Stripes per image side shared by all images, >= 0.
    size : int, optional
        Image side in pixels, >= 16.
    seed : int, optional
        Trial seed, >= 0. Image i gets the seed
        ``np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(n, np.uint64)[i] >> 1``,
        which depends only on ``seed`` and ``i``; different trial seeds give independent
        noise fields.
    noise : PerlinNoise, str or None, optional
        Settings of the displacement noise, as in :func:`texture`.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    SynthDataset
        ``n`` images of shape (size, size) with their parameters.

    Examples
    --------
    >>> data = angle_dataset(4, A=1.0, size=32)
    >>> len(data), data.images.shape
    (4, (4, 32, 32))
    """
    n = _check_count(n, "n")
    A = _check_real(A, "A", minimum=0.0)
    k = _check_real(k, "k", minimum=0.0)
    size = _check_size(size)
    seed = _check_seed(seed)
    theta = np.arange(n) * np.pi / n
    return _render(
        theta,
        np.full(n, k),
        np.full(n, A),
        _image_seeds(seed, n, _ANGLE_SALT),
        size=size,
        progress=progress,
        desc="angle dataset",
        noise=resolve_noise(noise),
    )


def grid_dataset(
    n_per_axis: int = 10,
    *,
    size: int = 256,
    seed: int = 0,
    theta_range: tuple[float, float] = (0.0, np.pi),
    k_range: tuple[float, float] = (5.0, 15.0),
    A_range: tuple[float, float] = (0.5, 2.0),
    noise: PerlinNoise | str | None = None,
    progress: bool = False,
) -> SynthDataset:
    """The paper's 3-D task: every combination of n_per_axis values of theta, k and A.

    Each axis takes the ``n_per_axis`` equally spaced values ``lo + i (hi - lo) / n_per_axis``,
    ``i = 0 .. n_per_axis - 1``, of its half-open range ``[lo, hi)``. The images are ordered
    with theta varying slowest and A fastest (``np.meshgrid(..., indexing="ij")``, raveled).

    Parameters
    ----------
    n_per_axis : int, optional
        Values per parameter, >= 1; the dataset has ``n_per_axis**3`` images (1000 by
        default, as in the paper).
    size : int, optional
        Image side in pixels, >= 16.
    seed : int, optional
        Dataset seed, >= 0. Image i gets the seed
        ``np.random.SeedSequence(seed, spawn_key=(2,)).generate_state(n, np.uint64)[i] >> 1``
        with ``n = n_per_axis**3``: a distinct noise field per image.
    theta_range, k_range, A_range : (float, float), optional
        Half-open ranges ``[lo, hi)`` with ``lo < hi``; ``k`` and ``A`` must be >= 0.
    noise : PerlinNoise, str or None, optional
        Settings of the displacement noise, as in :func:`texture`.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    SynthDataset
        ``n_per_axis**3`` images of shape (size, size) with their parameters.

    Examples
    --------
    >>> data = grid_dataset(2, size=16)
    >>> len(data), sorted(set(data.k.tolist()))
    (8, [5.0, 10.0])
    """
    n_per_axis = _check_count(n_per_axis, "n_per_axis")
    size = _check_size(size)
    seed = _check_seed(seed)
    axes = []
    for name, bounds in (("theta_range", theta_range), ("k_range", k_range), ("A_range", A_range)):
        lo, hi = _check_range(bounds, name)
        if name != "theta_range" and lo < 0.0:
            raise ValueError(f"The '{name}' parameter must have lo >= 0. Got {bounds!r} instead.")
        axes.append(lo + np.arange(n_per_axis) * (hi - lo) / n_per_axis)
    theta, k, A = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))
    n = theta.size
    return _render(
        theta,
        k,
        A,
        _image_seeds(seed, n, _GRID_SALT),
        size=size,
        progress=progress,
        desc="grid dataset",
        noise=resolve_noise(noise),
    )
