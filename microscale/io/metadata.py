r"""Micrographs and what their files say about them: the physical pixel size, the info bar.

:class:`Micrograph` is what :mod:`microscale.io.decode` returns. The functions here read
the pixel size from each vendor's metadata (parsed by the decoders) and find the
information bar of an SEM image (:func:`info_bar`: from the vendor's header, else from the
pixels, :func:`detected_info_bar`); none of them opens a file.

Physical pixel size
-------------------
``Micrograph.pixel_size_nm`` is the spacing of the columns (x) in nanometres, or ``None``
when the file does not say. Sources, in order of precedence (the first one found wins, and
``metadata["pixel_size_source"]`` names it):

1. OME-XML: ``Pixels/@PhysicalSizeX`` in ``PhysicalSizeXUnit`` (µm when absent, as the
   OME schema says), for the image of the selected page's series. An OME-XML text that
   declares a DOCTYPE or ENTITY (the vehicle of "billion laughs" entity-expansion bombs,
   never needed by OME) is not parsed at all: the file is read as a plain TIFF;
2. FEI / Thermo Fisher SEM and FIB (TIFF tag 34680 FEI_SFEG or 34682 FEI_HELIOS, an
   INI-style text): ``[Scan] PixelWidth`` (else ``[EScan] PixelWidth``), in metres;
3. Zeiss SEM (TIFF tag 34118 CZ_SEM): ``AP_IMAGE_PIXEL_SIZE`` (else ``AP_PIXEL_SIZE``),
   with the unit written after the number;
4. ImageJ: the ``unit`` of the ImageJ description and ``1 / XResolution`` pixels;
5. the TIFF ``XResolution`` tag with ``ResolutionUnit`` inch or centimetre (and
   tifffile's millimetre and micrometre extensions). A missing ``ResolutionUnit`` or
   ``NONE`` means uncalibrated; so does a resolution whose pixel is 10 µm or larger
   (at most 2540 pixels per inch), which is a print or screen setting (72, 96, 300 dpi)
   written by image software, not a microscope calibration;
6. DM files: the calibration (scale and unit) of the x axis, as rosettasciio reports it.

Units are normalised to nm (m, cm, mm, µm/um/micron, nm, Å/angstrom, pm, inch). Unknown
units, ``pixel`` and non-positive values give ``None``. Non-square pixels are not
corrected: ``pixel_size_nm`` is the x spacing.

Metadata
--------
``Micrograph.metadata`` is a JSON-serialisable dict: ``format``, ``dtype`` (the stored
sample dtype), ``shape`` and ``axes`` (of the stored series or image, channels included),
``channel_policy`` (what was done, in words), ``bit_depth`` (bits per sample when the file
says, else ``None``), ``n_pages``, ``pixel_size_source``, ``instrument_tags`` (names of the
private TIFF tags found, e.g. ``FEI_HELIOS``, ``CZ_SEM``), and ``instrument`` (the parsed
vendor headers, when present: ``"FEI"``, ``"CZ_SEM"`` and ``"TESCAN"`` from TIFF tags,
``"TESCAN"`` also from a ``<name>-<ext>.hdr`` sidecar, ``"Hitachi"`` and ``"JEOL"`` from a
``<name>.txt`` sidecar next to the image).
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BAR_MAX_FRACTION",
    "InfoBar",
    "Micrograph",
    "detect_info_bar",
    "detected_info_bar",
    "info_bar",
    "row_mode_fractions",
    "vendor_info_bar",
    "has_dtd",
    "jsonable",
    "pixel_size_dm",
    "pixel_size_fei",
    "pixel_size_imagej",
    "pixel_size_ome",
    "pixel_size_resolution",
    "pixel_size_zeiss",
    "positive_or_none",
    "unit_to_nm",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Micrograph:
    """One decoded 2-D grey micrograph and what the file says about it.

    Attributes
    ----------
    data : (H, W) ndarray
        The image in its native dtype (see the module docstring's channel policy).
    pixel_size_nm : float or None
        Physical size of a pixel along x, in nanometres; ``None`` when the file does not
        say.
    source : str
        The path the image was read from, as given.
    page : int
        Which page (frame) of the file this is, from 0.
    metadata : dict
        JSON-serialisable description: format, stored dtype and shape, channel policy,
        bit depth, number of pages, pixel-size source, instrument tags.

    Notes
    -----
    Equality is identity (``eq=False``): comparing pixel arrays is left to the caller.
    """

    data: np.ndarray
    pixel_size_nm: float | None
    source: str
    page: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of :attr:`data`."""
        return self.data.shape  # type: ignore[return-value]


_UNITS_NM: dict[str, float] = {
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "µm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "å": 0.1,
    "angstrom": 0.1,
    "ångström": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "in": 2.54e7,
    "inch": 2.54e7,
}


def unit_to_nm(unit: object) -> float | None:
    """Nanometres per ``unit`` (a length unit name in any common spelling), or None."""
    if not isinstance(unit, str):
        return None
    u = unit.strip().lower()
    u = u.replace("\\u00b5", "µ").replace("\\u03bc", "µ").replace("μ", "µ")  # micro signs
    u = u.replace("\u212b", "å")  # the angstrom sign
    if u in _UNITS_NM:
        return _UNITS_NM[u]
    if len(u) > 3 and u.endswith("s"):  # plurals: microns, meters, inches (not "ms")
        for stem in (u[:-1], u[:-2]):
            if stem in _UNITS_NM:
                return _UNITS_NM[stem]
    return None


def positive_or_none(value: float | None) -> float | None:
    """``value`` as a float if it is a finite number > 0, else None (a pixel size)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _length_nm(value: object, unit: object) -> float | None:
    """``value`` in ``unit`` converted to nm; None if either is unusable."""
    scale = unit_to_nm(unit)
    if scale is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return positive_or_none(number * scale)


def pixel_size_ome(ome_xml: str, image_index: int = 0) -> float | None:
    """PhysicalSizeX (nm) of the ``image_index``-th OME Image, or None.

    The unit defaults to µm, as in the OME schema.
    """
    if has_dtd(ome_xml):  # never expand entities (billion laughs)
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if not pixels:
        return None
    el = pixels[image_index] if image_index < len(pixels) else pixels[0]
    size = el.get("PhysicalSizeX")
    if size is None:
        return None
    return _length_nm(size, el.get("PhysicalSizeXUnit", "µm"))


def pixel_size_fei(fei: Mapping[str, Any] | None) -> float | None:
    """``[Scan] PixelWidth`` (else ``[EScan]``) of tifffile's ``fei_metadata``, in nm."""
    if not fei:
        return None
    for section in ("Scan", "EScan"):
        values = fei.get(section)
        if isinstance(values, Mapping) and "PixelWidth" in values:
            size = _length_nm(values["PixelWidth"], "m")
            if size is not None:
                return size
    return None


def pixel_size_zeiss(sem: Mapping[str, Any] | None) -> float | None:
    """``AP_IMAGE_PIXEL_SIZE`` (else ``AP_PIXEL_SIZE``) of tifffile's ``sem_metadata``, in nm.

    tifffile gives ``('Image Pixel Size', 2.233, 'nm')`` when it could split number and
    unit, else ``('Image Pixel Size', '2.233 nm')``.
    """
    if not sem:
        return None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = sem.get(key)
        if not isinstance(entry, tuple | list) or len(entry) < 2:
            continue
        if len(entry) >= 3:
            size = _length_nm(entry[1], entry[2])
        else:
            words = str(entry[1]).split()
            size = _length_nm(words[0], words[1]) if len(words) == 2 else None
        if size is not None:
            return size
    return None


def pixel_size_imagej(unit: object, x_resolution: float | None) -> float | None:
    """ImageJ: ``1 / XResolution`` pixels in ``unit``, in nm."""
    if not x_resolution or unit_to_nm(unit) is None:
        return None
    return _length_nm(1.0 / x_resolution, unit)


#: TIFF ResolutionUnit codes (4 and 5 are tifffile extensions) -> nm per unit.
_RESOLUTION_UNIT_NM = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}


#: Resolution-tag pixels at least this large (nm) are print/screen settings, not calibrations.
_MAX_CALIBRATED_PIXEL_NM = 10_000.0


def pixel_size_resolution(x_resolution: float | None, unit_code: int | None) -> float | None:
    """TIFF ``XResolution`` (pixels per unit) with ``ResolutionUnit``, in nm.

    None without a unit, with unit NONE (1), or when the pixel would be 10 µm or larger
    (72, 96 or 300 dpi and the like are defaults of image software, not calibrations).
    """
    if unit_code is None or unit_code not in _RESOLUTION_UNIT_NM or not x_resolution:
        return None
    size = positive_or_none(_RESOLUTION_UNIT_NM[unit_code] / x_resolution)
    if size is None or size >= _MAX_CALIBRATED_PIXEL_NM:
        return None
    return size


def pixel_size_dm(axes: list[Mapping[str, Any]], x_dim: int) -> float | None:
    """Scale of the array dimension ``x_dim`` in rosettasciio's axes list, in nm."""
    for ax in axes:
        if ax.get("index_in_array", None) == x_dim:
            return _length_nm(ax.get("scale"), ax.get("units"))
    if 0 <= x_dim < len(axes):
        return _length_nm(axes[x_dim].get("scale"), axes[x_dim].get("units"))
    return None


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` made of dict / list / str / int / float / bool / None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def has_dtd(xml: object) -> bool:
    """Whether an XML text declares a DOCTYPE or ENTITY (entity-expansion bombs need one)."""
    return isinstance(xml, str) and ("<!DOCTYPE" in xml or "<!ENTITY" in xml)


# --------------------------------------------------------------------------- info bars


@dataclass(frozen=True)
class InfoBar:
    """The rows of an SEM information bar ("data bar", "data zone") at the image's edges.

    Attributes
    ----------
    top, bottom : int
        Rows of the bar at the top and at the bottom of the image (0: none).
    source : str
        How it was found: ``"fei-metadata"``, ``"tescan-metadata"``, ``"hitachi-metadata"``,
        ``"jeol-metadata"`` (the vendor's header says how tall the image is without it),
        ``"detected"`` (from the pixels, :func:`detected_info_bar`), ``"user"`` (a height
        given by hand), or ``"none"``.
    """

    top: int = 0
    bottom: int = 0
    source: str = "none"

    @property
    def rows(self) -> int:
        """Rows removed in all: ``top + bottom``."""
        return self.top + self.bottom

    @property
    def edge(self) -> str:
        """``"bottom"``, ``"top"``, ``"top+bottom"``, or ``""`` when there is no bar."""
        return "+".join(name for name, n in (("top", self.top), ("bottom", self.bottom)) if n)


#: The tallest band :func:`detected_info_bar` takes for a bar, as a fraction of the height.
BAR_MAX_FRACTION = 0.25

# Detector thresholds (module docstring of detected_info_bar): specimen rows above this
# median mode fraction make the image too flat to tell a bar from the specimen.
_SPECIMEN_MAX = 0.25
_BAR_LEVEL = 0.4  # a bar row: one grey level owns at least this fraction of it
_PURE_LEVEL = 0.98  # a blank bar row (margins, separator lines)
_MAX_GAP = 3  # rows below the bar level tolerated inside a bar (dense text, a logo)
_SHARP_ROWS = 8  # specimen rows just past the bar that must look like specimen
_MIN_ROWS, _MIN_HEIGHT, _MIN_WIDTH = 8, 32, 16
_MAX_COLUMNS, _SPECIMEN_ROWS, _CHUNK = 1024, 128, 32


def row_mode_fractions(rows: np.ndarray) -> np.ndarray:
    """For each row, the fraction of its pixels equal to its most common value.

    Parameters
    ----------
    rows : (R, W) ndarray
        Any real dtype, finite.

    Returns
    -------
    fractions : (R,) ndarray of float64
        In ``[1 / W, 1]``: about ``1 / W`` for noisy specimen rows (a few percent for 8-bit
        data), near 1 for a flat fill with a few marks on it.

    Examples
    --------
    >>> row_mode_fractions(np.array([[0, 0, 0, 7], [1, 2, 3, 4]]))
    array([0.75, 0.25])
    """
    arr = np.asarray(rows)
    r, w = arr.shape
    if r == 0:
        return np.zeros(0)
    s = np.sort(arr, axis=1)
    new = np.ones((r, w), bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    index = np.broadcast_to(np.arange(w, dtype=np.int64), (r, w))
    start = np.maximum.accumulate(np.where(new, index, 0), axis=1)  # start of each run
    return ((index - start).max(axis=1) + 1) / w


def _edge_band(cols: np.ndarray, limit: int, specimen: float) -> int:
    """Rows of a bar at the start of ``cols`` (row 0 is the edge), or 0; see
    :func:`detected_info_bar` for the rules. Mode fractions are computed lazily, a few rows
    at a time, so an image without a bar costs a few rows."""
    h = cols.shape[0]
    level = max(_BAR_LEVEL, specimen + 0.25)
    chunks: list[np.ndarray] = []
    done = 0

    def upto(n: int) -> np.ndarray:
        nonlocal done
        while done < min(n, h):
            chunks.append(row_mode_fractions(cols[done : done + _CHUNK]))
            done += len(chunks[-1])
        return np.concatenate(chunks)[: min(n, h)] if chunks else np.zeros(0)

    band = gap = 0
    ended = False
    for i in range(min(limit, h)):
        if upto(i + 1)[i] >= level:
            band, gap = i + 1, 0
        else:
            gap += 1
            if gap > _MAX_GAP:
                ended = True
                break
    if not ended or band < _MIN_ROWS:  # nothing, or still inside a band at the size cap
        return 0
    fractions = upto(band + _SHARP_ROWS)
    inside, past = fractions[:band], fractions[band:]
    if inside[:2].max() < level:  # the band must start at the edge
        return 0
    if np.mean(inside >= level) < 0.7:  # mostly bar rows, not specimen with a few flat rows
        return 0
    if np.sum(inside >= _PURE_LEVEL) < max(2, math.ceil(0.1 * band)):  # blank rows
        return 0
    if past.size and (past.max() >= level or past.mean() > specimen + 0.15):  # sharp edge
        return 0
    return band


def detected_info_bar(image: np.ndarray, *, max_fraction: float = BAR_MAX_FRACTION) -> InfoBar:
    """Find an SEM information bar in the pixels: a flat band with marks at the top or bottom.

    Parameters
    ----------
    image : (H, W) ndarray
        A grey micrograph in its stored dtype (integers or floats), finite.
    max_fraction : float, optional
        The tallest band taken for a bar, as a fraction of ``H`` (default 0.25).

    Returns
    -------
    bar : InfoBar
        ``source="detected"`` with the rows found at either edge, or ``InfoBar()`` (no bar).

    Notes
    -----
    A bar is burned into the image by the instrument's software: a flat fill (usually
    black or white) with text, a scale bar and a logo drawn on it. The specimen has noise,
    so no single grey level owns more than a few percent of one of its rows. The statistic
    is therefore the *mode fraction* of each row (:func:`row_mode_fractions`: the share of
    its pixels equal to its most common value), on at most 1024 evenly spaced columns. A
    band is taken for a bar only when all of these hold:

    1. the specimen is not flat itself: the median mode fraction of up to 128 rows of the
       image's middle half is at most 0.25 (binary, posterised or noise-free images are
       never cropped: a bar cannot be told from them);
    2. walking from the edge inward, bar rows (mode fraction at least
       ``max(0.4, specimen + 0.25)``) follow each other with gaps of at most 3 rows (dense
       text), starting within the first 2 rows: the band is contiguous from the edge;
    3. it is at least 8 rows (a line of text) and at most ``max_fraction * H`` tall, and at
       least 70% of its rows are bar rows;
    4. it holds blank rows (mode fraction >= 0.98: margins and separator lines), at least
       2 and 10% of its rows, so a dark specimen whose noise is clipped at zero is not a
       bar (such rows are flat in part, never blank);
    5. its boundary is sharp, as a pasted band is and a vignette or a shadow is not: none of
       the 8 rows past it is a bar row, and their mean mode fraction is within 0.15 of the
       specimen's.

    The band's height is where the last bar row is, so separator lines at its inner edge
    are cropped with it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 256, (120, 100)).astype(np.uint8)
    >>> image[100:] = 0  # a black bar of 20 rows ...
    >>> image[106:112, 10:60:3] = 255  # ... with some text on it
    >>> detected_info_bar(image)
    InfoBar(top=0, bottom=20, source='detected')
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"The image must be a 2-D (H, W) array; got shape {arr.shape}.")
    if not (isinstance(max_fraction, int | float) and 0 < max_fraction < 1):
        raise ValueError(
            f"The 'max_fraction' parameter must be a number in (0, 1). Got {max_fraction!r} "
            "instead."
        )
    h, w = arr.shape
    if h < _MIN_HEIGHT or w < _MIN_WIDTH:
        return InfoBar()
    cols = arr[:, :: max(1, w // _MAX_COLUMNS)]
    middle = np.unique(np.linspace(h // 4, 3 * h // 4 - 1, _SPECIMEN_ROWS).astype(int))
    specimen = float(np.median(row_mode_fractions(cols[middle])))
    if specimen > _SPECIMEN_MAX:
        return InfoBar()
    limit = int(max_fraction * h)
    bottom = _edge_band(cols[::-1], limit, specimen)
    top = _edge_band(cols, limit, specimen)
    if top + bottom == 0 or top + bottom >= h // 2:
        return InfoBar()
    return InfoBar(top=top, bottom=bottom, source="detected")


def _section(header: Any, name: str) -> Mapping[str, Any]:
    values = header.get(name) if isinstance(header, Mapping) else None
    return values if isinstance(values, Mapping) else {}


def _height_from_size(text: object, shape: tuple[int, int], sep: str) -> int | None:
    """``H - h`` from a ``"w<sep>h"`` image size of the specimen area, if ``w`` is the width."""
    try:
        w, h = (int(float(v)) for v in str(text).lower().split(sep)[:2])
    except (TypeError, ValueError):
        return None
    if w != shape[1] or not 0 < h <= shape[0]:
        return None
    return shape[0] - h


def vendor_info_bar(micrograph: Micrograph) -> InfoBar | None:
    """The bottom bar that the vendor's metadata declares, or None when it says nothing.

    Parameters
    ----------
    micrograph : Micrograph
        As returned by :func:`read_micrograph` (``metadata["instrument"]``).

    Returns
    -------
    bar : InfoBar or None
        From, in this order:

        - FEI / Thermo Fisher (``"fei-metadata"``): the image height minus ``ResolutionY``
          of the ``[Image]`` (else ``[Scan]``) section;
        - TESCAN (``"tescan-metadata"``): ``ImageStripSize`` of ``[MAIN]`` (TIFF tag 50431
          or the ``<name>-<ext>.hdr`` sidecar);
        - Hitachi (``"hitachi-metadata"``): the height minus that of ``DataSize=WxH`` in the
          ``[SemImageFile]`` sidecar ``<name>.txt``, when ``W`` is the image's width;
        - JEOL (``"jeol-metadata"``): the height minus that of ``$CM_FULL_SIZE W H`` in the
          sidecar ``<name>.txt``, when ``W`` is the image's width.

        A declared bar of 0 rows is returned (the header says there is none); a height
        outside ``[0, H)`` is ignored. Zeiss ``CZ_SEM`` headers do not give the data zone's
        height: Zeiss bars are found by :func:`detected_info_bar`.

    Examples
    --------
    >>> m = Micrograph(np.zeros((4, 3)), None, "x.tif", 0,
    ...                {"instrument": {"FEI": {"Image": {"ResolutionY": 3}}}})
    >>> vendor_info_bar(m)
    InfoBar(top=0, bottom=1, source='fei-metadata')
    """
    instrument = micrograph.metadata.get("instrument", {}) or {}
    shape = tuple(int(n) for n in micrograph.data.shape)
    height = shape[0]
    fei = instrument.get("FEI")
    for section in ("Image", "Scan"):
        values = _section(fei, section)
        if "ResolutionY" in values:
            try:
                res_y = int(values["ResolutionY"])
            except (TypeError, ValueError):
                continue
            if 0 < res_y <= height:
                return InfoBar(bottom=height - res_y, source="fei-metadata")
            break
    strip = _section(instrument.get("TESCAN"), "MAIN").get("ImageStripSize")
    if strip is not None:
        try:
            rows = int(float(strip))
        except (TypeError, ValueError):
            rows = -1
        if 0 <= rows < height:
            return InfoBar(bottom=rows, source="tescan-metadata")
    hitachi = instrument.get("Hitachi")
    if isinstance(hitachi, Mapping) and "DataSize" in hitachi:
        rows = _height_from_size(hitachi["DataSize"], shape, "x")
        if rows is not None and rows < height:
            return InfoBar(bottom=rows, source="hitachi-metadata")
    jeol = instrument.get("JEOL")
    if isinstance(jeol, Mapping) and "$CM_FULL_SIZE" in jeol:
        rows = _height_from_size(str(jeol["$CM_FULL_SIZE"]).replace(" ", "x", 1), shape, "x")
        if rows is not None and rows < height:
            return InfoBar(bottom=rows, source="jeol-metadata")
    return None


def info_bar(
    micrograph: Micrograph, *, detect: bool = True, max_fraction: float = BAR_MAX_FRACTION
) -> InfoBar:
    """The SEM information bar of a micrograph: from the vendor's metadata, else the pixels.

    Parameters
    ----------
    micrograph : Micrograph
        As returned by :func:`read_micrograph`.
    detect : bool, optional
        Look for a bar in the pixels (:func:`detected_info_bar`) when the metadata says
        nothing. False: metadata only.
    max_fraction : float, optional
        Passed to :func:`detected_info_bar`.

    Returns
    -------
    bar : InfoBar
        :func:`vendor_info_bar` when the file declares one, else :func:`detected_info_bar`
        of ``micrograph.data``, else ``InfoBar()`` (``source="none"``). Crop it with
        ``crop(data, top=bar.top, bottom=bar.bottom)``.
    """
    declared = vendor_info_bar(micrograph)
    if declared is not None:
        return declared
    if detect:
        return detected_info_bar(micrograph.data, max_fraction=max_fraction)
    return InfoBar()


def detect_info_bar(micrograph: Micrograph) -> int:
    """Rows of the information bar at the bottom of a micrograph: ``info_bar(m).bottom``.

    Kept for callers of earlier releases; :func:`info_bar` also gives a bar at the top and
    says how it was found.

    Examples
    --------
    >>> m = Micrograph(np.zeros((4, 3)), None, "x.tif", 0,
    ...                {"instrument": {"FEI": {"Image": {"ResolutionY": 3}}}})
    >>> detect_info_bar(m)
    1
    """
    return info_bar(micrograph).bottom
