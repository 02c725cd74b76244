r"""Micrographs and what their files say about them: the physical pixel size, the info bar.

:class:`Micrograph` is what :mod:`microscale.io.decode` returns. The functions here read
the pixel size from each vendor's metadata (parsed by the decoders) and find the info bar
of an SEM image (:func:`detect_info_bar`); none of them opens a file.

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
FEI and Zeiss headers, keyed ``"FEI"`` and ``"CZ_SEM"``, when present).
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
    "Micrograph",
    "detect_info_bar",
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


def detect_info_bar(micrograph: Micrograph) -> int:
    """Height in pixels of the data bar that an SEM burned into the bottom of the image.

    Parameters
    ----------
    micrograph : Micrograph
        As returned by :func:`read_micrograph`.

    Returns
    -------
    height : int
        From the FEI / Thermo Fisher header: the image height minus ``ResolutionY`` of the
        ``[Image]`` (else ``[Scan]``) section, when that is between 1 and the height - 1.
        0 when the file has no FEI header (other instruments are not detected); crop
        manually with :func:`crop` then.

    Examples
    --------
    >>> m = Micrograph(np.zeros((4, 3)), None, "x.tif", 0,
    ...                {"instrument": {"FEI": {"Image": {"ResolutionY": 3}}}})
    >>> detect_info_bar(m)
    1
    """
    fei = micrograph.metadata.get("instrument", {}).get("FEI")
    if not isinstance(fei, Mapping):
        return 0
    height = int(micrograph.data.shape[0])
    for section in ("Image", "Scan"):
        values = fei.get(section)
        if isinstance(values, Mapping) and "ResolutionY" in values:
            try:
                res_y = int(values["ResolutionY"])
            except (TypeError, ValueError):
                continue
            if 0 < res_y < height:
                return height - res_y
            return 0
    return 0
