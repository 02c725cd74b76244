"""``microscale serve``: a small read-only HTTP server of a store's results.

Browsers refuse ``file://`` links from a web page, so the Prefect UI cannot open a map on
disk. :func:`make_server` serves a store's ``results/`` folder over HTTP with the standard
library's :class:`http.server.SimpleHTTPRequestHandler`, restricted to what a user needs:

- ``/``: the store's runs, newest first (:mod:`microscale.runlog`: when, outcome, counts,
  links to the outputs each wrote and to its Prefect flow-run page), then an index of the
  results (the interactive map, the figures, the datasets), each with its size and the
  time it was written;
- ``/runs.json``: the run log as JSON (``{"store", "runs", "problems"}``; each output with
  its ``href`` here and its ``state``: ``current``, ``rewritten`` by a later run, or
  ``missing``);
- ``/results/<file>``: a file of ``results/`` (``map.html``, the PNGs, ``map.nc``);
- ``/results/<name>.zarr.zip``: a Zarr store of ``results/`` as one zip download.

Nothing else: no other path of the store or the machine (``..``, symbolic links leading out
of ``results/`` and folders are refused with 404), no directory listings, no method but
GET and HEAD. Set the pipeline's ``results_url`` (``microscale run --results-url``) to the
server's address and the Prefect artifacts link the map there
(:func:`microscale.summary.result_link`).

Examples
--------
>>> import tempfile, urllib.request
>>> with tempfile.TemporaryDirectory() as tmp:
...     (Path(tmp) / "results").mkdir()
...     _ = (Path(tmp) / "results" / "map.html").write_text("<html>map</html>")
...     with serving(tmp, port=0) as url:
...         with urllib.request.urlopen(f"{url}/results/map.html") as r:
...             print(r.read().decode())
<html>map</html>
"""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import os
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from microscale.errors import StoreNotFoundError
from microscale.runlog import RunLog, RunRecord, read_runs

__all__ = ["ResultsHandler", "make_server", "serve_results", "serving"]

RESULTS = "results"
#: Runs listed on the index page (all of them are in /runs.json).
MAX_RUNS_SHOWN = 100


class ResultsHandler(SimpleHTTPRequestHandler):
    """Serves the index, files under ``results/`` and zips of its Zarr stores; nothing else."""

    server_version = "microscale-serve"

    def __init__(self, *args: Any, store: Path, **kwargs: Any) -> None:
        self.store = store
        self.results = (store / RESULTS).resolve()
        super().__init__(*args, directory=str(store), **kwargs)

    # -- routing ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            self._send_bytes(self._index().encode(), "text/html; charset=utf-8", head=head)
        elif path == "/runs.json":
            body = json.dumps(self._runs_json(read_runs(self.store)), indent=1).encode()
            self._send_bytes(body, "application/json", head=head)
        elif path.endswith(".zarr.zip") and self._inside(path[: -len(".zip")], folder=True):
            self._send_zip(Path(self.translate_path(path[: -len(".zip")])).resolve(), head=head)
        elif self._inside(path, folder=False):
            super().do_HEAD() if head else super().do_GET()
        else:
            self.send_error(
                HTTPStatus.NOT_FOUND, "Not found: only the files of the store's results/ are served"
            )

    def _inside(self, url_path: str, *, folder: bool) -> bool:
        """Whether the URL names a file (or a folder) that really lies in ``results/``."""
        if not url_path.startswith(f"/{RESULTS}/"):
            return False
        local = Path(self.translate_path(url_path)).resolve()
        if not local.is_relative_to(self.results):
            return False
        return local.is_dir() if folder else local.is_file()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "No directory listings")
        return None

    # -- responses ----------------------------------------------------------------------

    def _send_bytes(self, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_zip(self, folder: Path, *, head: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Disposition", f'attachment; filename="{folder.name}.zip"')
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        with zipfile.ZipFile(self.wfile, "w", zipfile.ZIP_STORED) as zf:  # streamed
            for file in sorted(folder.rglob("*")):
                if file.is_file() and file.resolve().is_relative_to(self.results):
                    zf.write(file, Path(folder.name) / file.relative_to(folder))

    def _index(self) -> str:
        rows = []
        entries = sorted(self.results.iterdir()) if self.results.is_dir() else []
        for entry in entries:
            if entry.is_symlink():
                continue
            stat = entry.stat()
            when = datetime.datetime.fromtimestamp(stat.st_mtime).isoformat(timespec="seconds")
            href = f"/{RESULTS}/{urllib.parse.quote(entry.name)}"
            if entry.is_dir():
                if not entry.name.endswith(".zarr"):
                    continue
                href, size = href + ".zip", "Zarr store, as a zip"
            else:
                size = f"{stat.st_size:,} bytes"
            rows.append(
                f"<tr><td><a href='{href}'>{html.escape(entry.name)}</a></td>"
                f"<td>{size}</td><td>{when}</td></tr>"
            )
        table = "\n".join(rows) or "<tr><td colspan=3>no results yet: run the pipeline</td></tr>"
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>microscale results of {html.escape(str(self.store))}</title></head><body>"
            f"<h1>microscale results</h1><p>Store <code>{html.escape(str(self.store))}</code>"
            "; each run re-writes these files.</p><table id='results'>"
            "<tr><th>file</th><th>size</th><th>written</th></tr>"
            f"{table}</table>{self._runs_html(read_runs(self.store))}</body></html>"
        )

    # -- the run log --------------------------------------------------------------------

    def _output_link(self, output: dict[str, Any]) -> tuple[str | None, str]:
        """Where this server serves a run's output (None: it does not), and its state:
        ``current``, ``rewritten`` (by a later run), ``missing``, or ``not served`` (not
        in ``results/``)."""
        rel = str(output.get("path", ""))
        folder = output.get("kind") == "folder"
        url = "/" + urllib.parse.quote(rel)
        if not self._inside(url, folder=folder):
            parts = Path(rel).parts
            in_results = len(parts) > 1 and parts[0] == RESULTS and ".." not in parts
            gone = in_results and not os.path.lexists(self.store / rel)
            return None, "missing" if gone else "not served"
        state = "current"
        if not folder:
            stat = Path(self.translate_path(url)).stat()
            if (stat.st_size, stat.st_mtime_ns) != (output.get("size"), output.get("mtime_ns")):
                state = "rewritten"
            return url, state
        return (url + ".zip", state) if rel.endswith(".zarr") else (None, "not served")

    def _runs_json(self, log: RunLog) -> dict[str, Any]:
        runs = []
        for run in log.runs:
            record = run.to_json()
            outputs = []
            for output in run.outputs:
                href, state = self._output_link(output)
                outputs.append({**output, "href": href, "state": state})
            record["outputs"] = outputs
            runs.append(record)
        return {"store": str(self.store), "runs": runs, "problems": [str(p) for p in log.problems]}

    def _runs_html(self, log: RunLog) -> str:
        problems = "".join(f"<li class='problem'>{html.escape(str(p))}</li>" for p in log.problems)
        problems = f"<ul class='problems'>{problems}</ul>" if problems else ""
        rows = "\n".join(self._run_row(run) for run in log.runs[:MAX_RUNS_SHOWN])
        more = len(log.runs) - MAX_RUNS_SHOWN
        if more > 0:
            rows += f"\n<tr><td colspan=7>{more} older run(s): see /runs.json</td></tr>"
        rows = rows or "<tr><td colspan=7>no run recorded yet</td></tr>"
        return (
            "<h2>Runs</h2><p>Newest first; also as <a href='/runs.json'>JSON</a>. A run's "
            "outputs are those it wrote: a later run rewrites them in place.</p>"
            f"{problems}<table id='runs'><tr><th>started (UTC)</th><th>run</th>"
            "<th>outcome</th><th>files</th><th>images</th><th>outputs</th><th>Prefect</th></tr>"
            f"{rows}</table>"
        )

    def _run_row(self, run: RunRecord) -> str:
        e = html.escape
        c = run.counts
        outcome = e(run.outcome) + (f": {e(run.reason)}" if run.reason else "")
        if run.ended:
            outcome += f" <small>(ended {e(run.ended)})</small>"
        files = ""
        if "files_found" in c:
            files = (
                f"{c['files_found']} found: {c.get('files_processed', 0)} processed, "
                f"{c.get('files_skipped', 0)} skipped, {c.get('files_failed', 0)} failed"
            )
        images = ""
        if "images" in c:
            images = f"{c['images']} ({c.get('images_new', 0)} new)"
            if "tiles" in c:
                images += f"; {c['tiles']} tiles ({c.get('tiles_new', 0)} new)"
        links = []
        for output in run.outputs:
            href, state = self._output_link(output)
            name = e(Path(str(output["path"])).name)
            note = "" if state == "current" else f" <small>({state})</small>"
            links.append(f"<a href='{e(href)}'>{name}</a>{note}" if href else f"{name}{note}")
        url = run.flow_run_url or ""
        prefect = (
            f"<a href='{e(url)}'>flow run</a>" if url.startswith(("http://", "https://")) else ""
        )
        return (
            f"<tr class='run {e(run.outcome)}'><td>{e(run.started)}</td>"
            f"<td title='{e(run.file)}'><code>{e(run.run_id)}</code></td><td>{outcome}</td>"
            f"<td>{e(files)}</td><td>{e(images)}</td><td>{', '.join(links)}</td>"
            f"<td>{prefect}</td></tr>"
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        if getattr(self.server, "verbose", True):
            super().log_message(format, *args)


def make_server(
    store: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) of the store's results; ``port=0`` picks a free one.

    Raises
    ------
    StoreNotFoundError
        If ``store`` is not a folder.
    """
    root = Path(store).resolve()
    if not root.is_dir():
        raise StoreNotFoundError(
            f"No store at {os.fspath(store)}: pass the folder given to `microscale run --store`."
        )
    return ThreadingHTTPServer((host, int(port)), partial(ResultsHandler, store=root))


@contextlib.contextmanager
def serving(
    store: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
) -> Iterator[str]:
    """Serve the store's results from a background thread while the block runs.

    For a notebook or a test beside other work; :func:`serve_results` is the blocking
    server of ``microscale serve``.

    Parameters
    ----------
    store : path
        The folder given to ``microscale run --store``.
    host, port
        Where to listen; ``port=0`` picks a free port.
    verbose : bool, optional
        Log each request to stderr (default: quiet).

    Yields
    ------
    str
        The server's address, ``http://HOST:PORT``.
    """
    server = make_server(store, host=host, port=port)
    server.verbose = verbose
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        h, p = server.server_address[:2]
        yield f"http://{h}:{p}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_results(
    store: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve the store's results until interrupted (Ctrl-C)."""
    with make_server(store, host=host, port=port) as server:
        h, p = server.server_address[:2]
        print(f"serving the results of {store} at http://{h}:{p}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
