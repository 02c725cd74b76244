"""The interactive archive map: one self-contained HTML file (Bokeh, no server, offline).

:func:`write_interactive_map` draws the MDS map of a :func:`microscale.mapping.map_store`
Dataset as a Bokeh scatter and writes it with Bokeh's JavaScript inlined
(:data:`bokeh.resources.INLINE`), so the file opens from ``file://`` on a machine without
a network. In the page:

- the axes are any two of the first three MDS components, of either descriptor;
- points are coloured by a chosen variable: the generating parameters (``theta``, ``k``,
  ``A``) when the archive has ground truth, the source folder (parent directory of the
  path), the pixel size, and each descriptor's outlier score and cluster;
- hovering a point shows its thumbnail and path; clicking one lists its nearest
  neighbours (thumbnails, paths, distances) in the side panel, which shows the first
  image until something is clicked.

Thumbnails are ``thumbnail_size`` px (64 by default) greyscale JPEG data URIs,
contrast-stretched per image: about 2.4 kB each for busy 256 px textures. At most
``max_thumbnails`` images (2000 by default) get one, chosen evenly along the archive plus
the most outlying images, so the file stays bounded; the others show a grey square. The
scatter keeps every point, at about 0.23 kB a point (two descriptors, 5 neighbours,
float32/int32 columns) on top of 1.7 MB of Bokeh's JavaScript. Measured: 4.4 MB for 1000
images with thumbnails, 8.9 MB for 10,000 images (2000 thumbnails), so about 30 MB for
10^5 images.
"""

from __future__ import annotations

import base64
import html
import io
import os
import posixpath
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from microscale.plots import map_dimension

__all__ = ["colorings", "legend_title", "thumbnail_uri", "write_interactive_map"]

#: Default edge of a thumbnail, in pixels.
THUMBNAIL_SIZE = 64
#: Default most thumbnails embedded in one file.
MAX_THUMBNAILS = 2000
#: Colour of points with no value (NaN, or cluster -1: noise).
MISSING_COLOR = "#b0b0b0"
# A grey 1 x 1 PNG for points without a thumbnail.
_BLANK = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGO4AwAA"
    "0QDQOQj6+gAAAABJRU5ErkJggg=="
)
_LABELS = {"cnn": "CNN (VGG-19 Gram)", "ps": "power spectrum"}


def thumbnail_uri(image: np.ndarray, *, size: int = THUMBNAIL_SIZE, quality: int = 85) -> str:
    """A greyscale JPEG data URI of an image, at most ``size`` px on a side.

    Parameters
    ----------
    image : (M, N) ndarray
        Any real values; stretched to its own 1st-99th percentile range.
    size : int, optional
        Longest edge of the thumbnail (64 by default).
    quality : int, optional
        JPEG quality, 1-95.

    Returns
    -------
    str
        ``"data:image/jpeg;base64,..."``.
    """
    from PIL import Image

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"A thumbnail needs a 2-D image. Got shape {img.shape} instead.")
    if not 1 <= int(size) <= 4096:
        raise ValueError(f"The 'size' parameter must be an int in [1, 4096]. Got {size!r}.")
    finite = np.isfinite(img)
    lo, hi = np.percentile(img[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    scaled = np.clip((np.where(finite, img, lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    pic = Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
    pic.thumbnail((int(size), int(size)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=int(quality))
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _folders(paths: np.ndarray) -> np.ndarray:
    out = [posixpath.dirname(str(p).replace(os.sep, "/").split("@")[0]) or "." for p in paths]
    return np.array(out, dtype=object)


def colorings(ds: xr.Dataset) -> dict[str, tuple[np.ndarray, str]]:
    """The variables a map can be coloured by: name -> ((n,) values, kind).

    ``kind`` is ``"continuous"``, ``"cyclic"`` (an angle) or ``"categorical"``. Only
    variables the Dataset has, with at least one finite value, are offered.
    """
    out: dict[str, tuple[np.ndarray, str]] = {}
    for p in ("theta", "k", "A"):
        if p in ds.coords and np.isfinite(ds[p].values.astype(float)).any():
            out[p] = (ds[p].values.astype(float), "cyclic" if p == "theta" else "continuous")
    if "image_path" in ds.coords:
        out["folder"] = (_folders(ds.image_path.values), "categorical")
    if "pixel_size_nm" in ds.coords:
        px = ds.pixel_size_nm.values.astype(float)
        if np.isfinite(px).any():
            out["pixel size (nm)"] = (px, "continuous")
    for d in ds.descriptor.values:
        if "outlier_score" in ds:
            out[f"outlier score ({d})"] = (ds.outlier_score.sel(descriptor=d).values, "continuous")
        if "cluster" in ds:
            out[f"cluster ({d})"] = (ds.cluster.sel(descriptor=d).values, "categorical")
    return out


def _hex(rgba: np.ndarray) -> list[str]:
    rgb = np.round(np.asarray(rgba)[:, :3] * 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def legend_title(ds: xr.Dataset, name: str) -> str:
    """The title over a colouring's legend: its name with its units (``theta (rad)``)."""
    if name in ds.coords:
        units = ds[name].attrs.get("units")
        return f"{name} ({units})" if units and units != "1" else name
    if name.startswith("outlier score") and "outlier_score" in ds:
        k = ds.outlier_score.attrs.get("n_neighbors", "k")
        return f"{name}: texture distance to the {k}-th nearest neighbour"
    return name


def _colors(values: np.ndarray, kind: str, title: str = "") -> tuple[list[str], str]:
    """Hex colour per point and the legend's HTML (under ``title``)."""
    colors, legend = _uncaptioned_colors(values, kind)
    head = (
        "<div class='microscale-legend-title' style='font-size:12px'>"
        f"<b>{html.escape(title)}</b></div>"
    )
    return colors, (head if title else "") + legend


def _uncaptioned_colors(values: np.ndarray, kind: str) -> tuple[list[str], str]:
    import matplotlib

    if kind == "categorical":
        labels = np.array([str(v) for v in values], dtype=object)
        cats = sorted(set(labels) - {"-1"}, key=lambda c: (not c.lstrip("-").isdigit(), c))
        if all(c.lstrip("-").isdigit() for c in cats):
            cats = sorted(cats, key=int)
        cmap = matplotlib.colormaps["tab10" if len(cats) <= 10 else "tab20"]
        table = {c: _hex(np.array([cmap(i % cmap.N)]))[0] for i, c in enumerate(cats)}
        table["-1"] = MISSING_COLOR
        colors = [table[c] for c in labels]
        shown = [*cats[:20], *(["-1"] if "-1" in set(labels) else [])]
        items = "".join(
            f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;'
            f'height:10px;background:{table[c]}"></span> '
            f"{html.escape('noise' if c == '-1' else c)}</span> "
            for c in shown
        )
        more = f" and {len(cats) - 20} more" if len(cats) > 20 else ""
        return colors, f"<div style='font-size:11px'>{items}{more}</div>"
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 1.0)
    cmap = matplotlib.colormaps["twilight" if kind == "cyclic" else "viridis"]
    scaled = np.where(finite, (values - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    colors = np.array(_hex(cmap(scaled)), dtype=object)
    colors[~finite] = MISSING_COLOR
    stops = ", ".join(_hex(cmap(np.linspace(0, 1, 8))))
    legend = (
        f"<div style='font-size:11px'>{lo:.4g} <span style='display:inline-block;width:120px;"
        f"height:10px;background:linear-gradient(to right, {stops})'></span> {hi:.4g}</div>"
    )
    return list(colors), legend


def _chosen(n: int, scores: np.ndarray | None, cap: int) -> np.ndarray:
    """Which points get a thumbnail: all, or evenly spaced ones plus the top outliers."""
    if n <= cap:
        return np.arange(n)
    if cap <= 0:
        return np.arange(0)
    top = np.arange(0)
    if scores is not None:
        top = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[: cap // 10]
    rest = np.setdiff1d(np.arange(n), top)  # len(rest) >= cap - len(top): steps >= 1
    spread = rest[np.linspace(0, len(rest) - 1, cap - len(top)).round().astype(np.int64)]
    return np.union1d(top, spread)


def _panel(i: int, paths: np.ndarray, thumbs: list[str]) -> str:
    return (
        f"<div id='microscale-selected'><b>image {i}</b><br><img src='{thumbs[i] or _BLANK}' "
        f"width=128 height=128 style='image-rendering:pixelated'><br>"
        f"<code style='font-size:11px'>{html.escape(str(paths[i]))}</code><br>"
        "<i>Click a point to list its nearest neighbours.</i></div>"
    )


_AXES_JS = """
const d = desc.value, xa = Number(xsel.value) - 1, ya = Number(ysel.value) - 1;
const data = source.data;
data.x = data[d + '_c' + xa];
data.y = data[d + '_c' + ya];
xaxis.axis_label = labels[d] + ', MDS component ' + (xa + 1);
yaxis.axis_label = labels[d] + ', MDS component ' + (ya + 1);
source.change.emit();
"""

_COLOR_JS = """
const i = names.indexOf(csel.value);
source.data.color = source.data['color_' + i];
legend.text = legends[i];
source.change.emit();
"""

_TAP_JS = """
const sel = source.selected.indices;
if (sel.length == 0) { return; }
const i = sel[0], data = source.data, d = desc.value;
const thumb = (j) => data.thumb[j] || blank;
const esc = (s) => String(s).replace(/[&<>'"]/g,
    (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&#39;', '"': '&quot;'})[c]);
let out = "<div id='microscale-selected'><b>image " + i + "</b><br><img src='" +
    thumb(i) + "' width=128 height=128 style='image-rendering:pixelated'><br><code " +
    "style='font-size:11px'>" + esc(data.path[i]) + "</code>";
if (data[d + '_score'] !== undefined) {
    out += "<br>outlier score " + Number(data[d + '_score'][i]).toPrecision(4) +
        ", cluster " + data[d + '_cluster'][i];
}
out += "</div><b>nearest neighbours (" + labels[d] + ")</b><ol id='microscale-neighbors' " +
    "style='list-style:none;padding-left:0'>";
for (let r = 0; r < k; r++) {
    const j = data[d + '_nb' + r][i];
    out += "<li style='display:flex;align-items:center;gap:6px;margin:3px 0;" +
        "min-height:34px'><img src='" + thumb(j) + "' width=32 height=32 " +
        "style='flex:none;width:32px;height:32px'> <span><code style='font-size:11px;" +
        "word-break:break-all'>" + esc(data.path[j]) + "</code> (" +
        Number(data[d + '_nd' + r][i]).toPrecision(4) + ")</span></li>";
}
panel.text = out + "</ol>";
"""


def _columns(ds: xr.Dataset, dim: int) -> dict[str, object]:
    """Per-point columns of each descriptor: components ``<d>_c0..2`` of the ``dim``-D map,
    ``<d>_score``, ``<d>_cluster`` and neighbours ``<d>_nb<r>`` / distances ``<d>_nd<r>``."""
    n = ds.sizes["image"]
    data: dict[str, object] = {"index": np.arange(n, dtype=np.int32)}
    for d in (str(v) for v in ds.descriptor.values):
        xyz = ds.embedding.sel(descriptor=d, n_components=dim).values
        # float32 / int32 columns: Bokeh ships arrays as base64 binary, half the size of 64-bit
        for c in range(3):
            values = xyz[:, c] if c < min(dim, xyz.shape[1]) else np.zeros(n)
            data[f"{d}_c{c}"] = values.astype(np.float32)
        if "outlier_score" in ds:
            data[f"{d}_score"] = ds.outlier_score.sel(descriptor=d).values.astype(np.float32)
        if "cluster" in ds:
            data[f"{d}_cluster"] = ds.cluster.sel(descriptor=d).values.astype(np.int32)
        if "neighbor" in ds:
            nb = ds.neighbor.sel(descriptor=d).values.astype(np.int32)
            nd = ds.neighbor_distance.sel(descriptor=d).values.astype(np.float32)
            for r in range(nb.shape[1]):
                data[f"{d}_nb{r}"], data[f"{d}_nd{r}"] = nb[:, r], nd[:, r]
    return data


def write_interactive_map(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    thumbnail: Callable[[int], np.ndarray] | None = None,
    thumbnail_size: int = THUMBNAIL_SIZE,
    max_thumbnails: int = MAX_THUMBNAILS,
    title: str | None = None,
) -> Path:
    """Write the map as one self-contained, offline HTML page (Bokeh, JavaScript inlined).

    Parameters
    ----------
    ds : xarray.Dataset
        A map from :func:`microscale.mapping.map_store`: ``embedding`` (descriptor,
        n_components, image, component), and optionally ``image_path``,
        ``pixel_size_nm``, ground truth, ``outlier_score``, ``cluster``, ``neighbor`` and
        ``neighbor_distance``.
    path : path
        The ``.html`` file to write.
    thumbnail : callable, optional
        ``thumbnail(i)`` returns the (s, s) picture of point ``i`` (any real values);
        called only for the points that get a thumbnail, in increasing ``i``.
    thumbnail_size : int, optional
        Thumbnail edge in px (64 by default).
    max_thumbnails : int, optional
        Most thumbnails embedded (2000 by default): evenly spaced points plus the top
        tenth of that number by outlier score; the others show a grey square.
    title : str, optional
        Page title; default the Dataset's ``title`` attribute.

    Returns
    -------
    Path
        The file written.
    """
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (
        ColumnDataSource,
        CustomJS,
        CustomJSHover,
        Div,
        HoverTool,
        Select,
        TapTool,
    )
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    if "embedding" not in ds:
        raise ValueError(
            "The Dataset has no 'embedding' variable; pass the output of "
            "microscale.mapping.map_store."
        )
    if isinstance(max_thumbnails, bool) or not int(max_thumbnails) >= 0:
        raise ValueError(
            f"The 'max_thumbnails' parameter must be an int >= 0. Got {max_thumbnails!r} instead."
        )
    n = ds.sizes["image"]
    descriptors = [str(d) for d in ds.descriptor.values]
    ks = [int(k) for k in ds.n_components.values]
    dim = map_dimension(ks)
    paths = (
        ds.image_path.values.astype(str)
        if "image_path" in ds.coords
        else np.array([str(v) for v in ds.image.values])
    )
    data = _columns(ds, dim)
    data["path"] = paths.astype(object)
    k = int(ds.sizes.get("rank", 0)) if "neighbor" in ds else 0
    data["x"], data["y"] = data[f"{descriptors[0]}_c0"], data[f"{descriptors[0]}_c1"]

    thumbs = [""] * n  # "": no thumbnail; the page shows a grey square (_BLANK) instead
    if thumbnail is not None:
        scores = ds.outlier_score.values[0] if "outlier_score" in ds else None
        for i in _chosen(n, scores, int(max_thumbnails)):
            thumbs[int(i)] = thumbnail_uri(thumbnail(int(i)), size=thumbnail_size)
    data["thumb"] = thumbs

    options = colorings(ds)
    names, legends = list(options), []
    for i, (values, kind) in enumerate(options.values()):
        data[f"color_{i}"], legend = _colors(values, kind, legend_title(ds, names[i]))
        legends.append(legend)
    data["color"] = data["color_0"] if names else [MISSING_COLOR] * n
    source = ColumnDataSource(data, name="points-source")

    labels = {d: _LABELS.get(d, d) for d in descriptors}
    plot = figure(
        width=720, height=620, match_aspect=True, name="map",
        tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
        title=f"Texture map of {n} {ds.attrs.get('level', 'image')}s (MDS, D*={dim})",
        x_axis_label=f"{labels[descriptors[0]]}, MDS component 1",
        y_axis_label=f"{labels[descriptors[0]]}, MDS component 2",
    )  # fmt: skip
    points = plot.scatter(
        "x", "y", source=source, size=8, fill_color="color", line_color="color",
        fill_alpha=0.8, nonselection_fill_alpha=0.5, selection_line_color="black",
        name="points",
    )  # fmt: skip
    plot.add_tools(
        HoverTool(
            renderers=[points],
            tooltips="<div><img src='@thumb{custom}' width=64 height=64 "
            "style='image-rendering:pixelated'><br><code style='font-size:11px'>@path</code>"
            "</div>",
            formatters={
                "@thumb": CustomJSHover(args={"blank": _BLANK}, code="return value || blank")
            },
        ),
        TapTool(renderers=[points]),
    )
    desc = Select(title="descriptor", value=descriptors[0], options=descriptors, name="desc")
    axes = [str(c + 1) for c in range(min(dim, 3))]
    xsel = Select(title="x axis: component", value="1", options=axes, name="xsel")
    ysel = Select(
        title="y axis: component", value=axes[min(1, len(axes) - 1)], options=axes, name="ysel"
    )
    csel = Select(title="colour by", value=names[0] if names else "", options=names, name="csel")
    legend = Div(text=legends[0] if legends else "", name="legend")
    panel = Div(text=_panel(0, paths, thumbs), width=380, name="panel")
    args = {"source": source, "desc": desc, "xsel": xsel, "ysel": ysel, "labels": labels}
    axes_cb = CustomJS(args={**args, "xaxis": plot.xaxis[0], "yaxis": plot.yaxis[0]}, code=_AXES_JS)
    for widget in (desc, xsel, ysel):
        widget.js_on_change("value", axes_cb)
    csel.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "csel": csel, "legend": legend, "names": names,
                  "legends": legends},
            code=_COLOR_JS,
        ),
    )  # fmt: skip
    source.selected.js_on_change(
        "indices", CustomJS(args={**args, "panel": panel, "k": k, "blank": _BLANK}, code=_TAP_JS)
    )
    layout = row(plot, column(desc, row(xsel, ysel), csel, legend, panel))
    page = file_html(layout, resources=INLINE, title=title or ds.attrs.get("title", "map"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
