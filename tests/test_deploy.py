"""`deploy/prefect.yaml` end to end, as deploy/README.md walks through it.

A real ``prefect server start`` on a free port of 127.0.0.1 with a throwaway PREFECT_HOME;
the work pool and the deployment are created with the CLI, one run of the deployment on a
tiny demo archive is executed by a ``--run-once`` process worker, and the run is checked
through the API (state, subflows, artifacts, the map on disk) and in the UI (headless
Chromium: from `microscale serve`'s list of runs to the flow-run page, its Artifacts tab, the
summary and the map it links). Every process is started in its own process group and killed
at teardown.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows._progress import store_tag
from flows.params import PipelineParams
from microscale.demo import write_demo_archive
from microscale.runlog import read_runs
from microscale.serve import serving
from tests.cdp import Browser

pytestmark = [pytest.mark.slow, pytest.mark.weights]

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deploy" / "prefect.yaml"
PREFECT = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
POOL = "microscale-process"
DEPLOYMENT = "pipeline/nightly"

SERVER_STARTUP_S = 120
CLI_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240
BROWSER_TIMEOUT_S = 90
#: Times the flow-run page is opened and its Artifacts tab clicked before giving up.
ARTIFACTS_TAB_ATTEMPTS = 3

#: The keyed artifacts a run publishes (parent run and subflows), by type; each key ends
#: with the store's tag (flows/_progress.py).
EXPECTED_ARTIFACTS = {
    "ingest-progress": "progress",
    "features-cnn": "progress",
    "features-ps": "progress",
    "image-features-cnn": "progress",
    "distances-cnn": "progress",
    "distances-ps": "progress",
    "ingest-outcomes": "table",
    "embed-stress": "table",
    "embed-metrics": "table",
    "embed-summary": "markdown",
    "pipeline-summary": "markdown",
    "pipeline-outcomes": "table",
    "dask-dashboard": "markdown",  # Prefect stores link artifacts as markdown
}
#: Those the parent `pipeline` run itself carries (what a user opens from the deployment).
PARENT_ARTIFACTS = ("pipeline-summary", "pipeline-outcomes", "dask-dashboard")


# -- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_group(proc: subprocess.Popen, *, grace_s: float = 20) -> None:
    """Terminate a process started with ``start_new_session=True`` and all its children."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 60) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


@dataclass(frozen=True)
class Server:
    url: str  # the UI
    api_url: str
    env: dict[str, str]  # for every CLI call: PREFECT_HOME, PREFECT_API_URL, MICROSCALE_REPO
    log: Path


def _prefect(server: Server, *args: str) -> str:
    """Run a ``prefect`` CLI command against the test server from the repository root."""
    try:
        done = subprocess.run(
            [PREFECT, *args],
            cwd=REPO,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"`prefect {' '.join(args)}` took more than {CLI_TIMEOUT_S} s: {err.stdout}")
    if done.returncode != 0:
        pytest.fail(f"`prefect {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def _api(server: Server) -> Iterator[SyncPrefectClient]:
    """Prefect's own client, pointed at the test server."""
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "home"),
        PREFECT_API_URL=f"{url}/api",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # no nightly runs created behind the test's back (the schedule itself is checked)
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        MICROSCALE_REPO=str(REPO),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        COLUMNS="200",  # keep Rich from wrapping the CLI's output
    )
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + SERVER_STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(OSError):
                with opener.open(f"{url}/api/health", timeout=5) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after {SERVER_STARTUP_S} s:\n{_tail(log)}")
            time.sleep(1)
        yield Server(url=url, api_url=f"{url}/api", env=env, log=log)
    finally:
        _kill_group(proc)


# -- one run of the deployment -----------------------------------------------------------


@dataclass(frozen=True)
class DeployedRun:
    params: PipelineParams
    flow_run: FlowRun  # in its final state
    subflow_runs: list[FlowRun]
    worker_log: Path


@pytest.fixture(scope="module")
def deployed_run(
    server: Server, tmp_path_factory: pytest.TempPathFactory, vgg_weights
) -> DeployedRun:
    """Pool, deployment and one run, with the CLI commands of deploy/README.md."""
    root = tmp_path_factory.mktemp("deployed")
    write_demo_archive(root / "archive", n=10, size=64, seed=5)
    results_port = _free_port()
    params = PipelineParams(
        archive=root / "archive", store=root / "store", tile_size=64, n_workers=1,
        device="cpu", n_components=[1, 2, 3], results_url=f"http://127.0.0.1:{results_port}/",
        calibrate=False,
    )  # fmt: skip
    yaml_before = PREFECT_YAML.read_bytes()
    _prefect(server, "work-pool", "create", POOL, "--type", "process")
    _prefect(server, "deploy", "--prefect-file", "deploy/prefect.yaml", "--all", "--no-prompt")
    assert PREFECT_YAML.read_bytes() == yaml_before, "`prefect deploy` rewrote prefect.yaml"
    # the on-demand query deployment is there too, pointing at the similar flow
    query = _prefect(server, "deployment", "inspect", "similar/query")
    assert "flows/similar.py:similar" in query and "'schedules': []" in query
    run_name = f"deploy-test-{uuid.uuid4().hex[:8]}"
    run_params = {"params": params.model_dump(mode="json", exclude_unset=True)}
    _prefect(
        server, "deployment", "run", DEPLOYMENT, "--flow-run-name", run_name,
        "--params", json.dumps(run_params),
    )  # fmt: skip

    worker_log = root / "worker.log"
    with worker_log.open("wb") as out:
        # --limit makes a --run-once worker wait for the run it picked up before exiting;
        # it runs outside the repository: the deployment's pull step must find the code
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--run-once", "--limit", "1"],
            cwd=root,
            env=server.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        with _api(server) as client:
            (flow_run,) = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))
            )
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while not flow_run.state.is_final():
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"flow run {run_name} still {flow_run.state.name} after "
                        f"{RUN_TIMEOUT_S} s; worker log:\n{_tail(worker_log)}"
                    )
                exited = worker.poll() is not None
                time.sleep(0 if exited else 2)
                flow_run = client.read_flow_run(flow_run.id)
                if exited and not flow_run.state.is_final():
                    pytest.fail(
                        f"the worker exited (rc {worker.returncode}) with {run_name} "
                        f"{flow_run.state.name}:\n{_tail(worker_log)}"
                    )
            subflow_runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id])
                )
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=60)  # it exits once the run is over; killed below if not
    finally:
        _kill_group(worker)
    return DeployedRun(params, flow_run, subflow_runs, worker_log)


def _run_artifacts(
    client: SyncPrefectClient, run: DeployedRun, *, parent_only: bool = False
) -> dict[str, Artifact]:
    """The keyed artifacts of a run and its subflows, by key without the store's tag."""
    ids = [run.flow_run.id] + ([] if parent_only else [sub.id for sub in run.subflow_runs])
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
    )
    tag = "-" + store_tag(run.params.store)
    keyed = [a for a in artifacts if a.key]
    assert all(a.key.endswith(tag) for a in keyed), [a.key for a in keyed]
    return {a.key.removesuffix(tag): a for a in keyed}


def test_deployment_runs_on_a_worker_and_publishes_artifacts(
    server: Server, deployed_run: DeployedRun
) -> None:
    run = deployed_run
    assert run.flow_run.state.is_completed(), (
        f"{run.flow_run.name}: {run.flow_run.state!r}\n{_tail(run.worker_log)}"
    )
    with _api(server) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        artifacts = _run_artifacts(client, run)
    # the deployment is the one prefect.yaml declares
    assert run.flow_run.deployment_id == deployment.id
    assert deployment.entrypoint == "flows/pipeline.py:pipeline"
    assert deployment.work_pool_name == POOL
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.pull_steps == [{"flows.repository.set_repository": {"directory": str(REPO)}}]
    # one subflow per stage, all completed
    assert len(run.subflow_runs) == 4
    assert all(sub.state.is_completed() for sub in run.subflow_runs)
    # the keyed artifacts, each of the right type; progress bars at 100 %
    assert {key: a.type for key, a in artifacts.items() if key in EXPECTED_ARTIFACTS} == (
        EXPECTED_ARTIFACTS
    )
    for key, kind in EXPECTED_ARTIFACTS.items():
        if kind == "progress":
            assert float(artifacts[key].data) == pytest.approx(100.0), key
    # progress in counts: the descriptions say n/N of what
    assert re.search(r": (\d+)/\1 files", artifacts["ingest-progress"].description)
    assert re.search(r": (\d+)/\1 tiles", artifacts["features-cnn"].description)
    assert re.search(r": (\d+)/\1 block pairs", artifacts["distances-ps"].description)
    # the parent run carries the summary, the outcomes and the dashboard link itself
    with _api(server) as client:
        parent = _run_artifacts(client, run, parent_only=True)
    assert set(PARENT_ARTIFACTS) <= set(parent)
    summary = parent["pipeline-summary"].data
    assert "map.nc" in summary and "processed" in summary and "R^2" in summary
    assert f"({run.params.results_url}results/map.html)" in summary
    assert f"![the map]({run.params.results_url}results/map.png)" in summary
    assert "(http://127.0.0.1:" in parent["dask-dashboard"].data
    rows = parent["pipeline-outcomes"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert sum(row["files"] for row in rows) >= 10
    assert (run.params.store / "results" / "map.nc").is_file()


# -- the UI ---------------------------------------------------------------------------------


def _chromium(browser: str, user_data: Path, *args: str) -> str:
    """One headless Chromium invocation that can reach 127.0.0.1 only; its stdout."""
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={user_data}", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium took more than {BROWSER_TIMEOUT_S} s on {args[-1]}")
    finally:
        _kill_group(proc, grace_s=5)
    return out


def _page_text(browser: str, user_data: Path, url: str, expected: list[str]) -> str:
    """The visible text of a page of the (JavaScript) UI once it has rendered.

    ``--dump-dom`` prints the DOM after the virtual-time budget, which is paused while
    requests to the API are pending; a slow server gets a second and third, longer try.
    """
    text = ""
    for budget_ms in (10_000, 30_000, 60_000):
        dom = _chromium(browser, user_data, f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
        dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
        if all(word in text for word in expected):
            break
    return text


def test_ui_shows_the_run_and_its_artifacts(
    server: Server, deployed_run: DeployedRun, chromium: str, tmp_path: Path
) -> None:
    run = deployed_run.flow_run
    user_data = tmp_path / "chromium-profile"
    with _api(server) as client:
        summary = _run_artifacts(client, deployed_run)["embed-summary"]
    embed_run = next(sub for sub in deployed_run.subflow_runs if sub.id == summary.flow_run_id)

    # the flow-run page: name, state, deployment, work pool
    expected = [run.name, "Completed", "nightly", POOL]
    text = _page_text(chromium, user_data, f"{server.url}/runs/flow-run/{run.id}", expected)
    for word in expected:
        assert word in text, f"{word!r} not on the flow-run page: {text[:2000]}"

    # the artifacts page lists every key the run published
    expected = list(EXPECTED_ARTIFACTS)
    text = _page_text(chromium, user_data, f"{server.url}/artifacts", expected)
    for word in expected:
        assert word in text, f"{word!r} not on the artifacts page: {text[:2000]}"

    # the summary's page renders its markdown and links to the subflow run that wrote it
    heading = summary.data.splitlines()[0].lstrip("# ")  # "microscale map of 10 images"
    expected = [heading, "map.nc", embed_run.name]
    url = f"{server.url}/artifacts/artifact/{summary.id}"
    text = _page_text(chromium, user_data, url, expected)
    for word in expected:
        assert word in text, f"{word!r} not on the artifact page: {text[:2000]}"

    screenshot = tmp_path / "run.png"
    _chromium(
        chromium, user_data, "--virtual-time-budget=10000", "--window-size=1400,1000",
        f"--screenshot={screenshot}", f"{server.url}/runs/flow-run/{run.id}",
    )  # fmt: skip
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    print(f"screenshot of the flow-run page: {screenshot}")


@contextlib.contextmanager
def _serve(store: Path, results_url: str) -> Iterator[str]:
    """``microscale serve`` of the store at the port its runs link (``results_url``)."""
    port = int(re.match(r"http://127\.0\.0\.1:(\d+)/", results_url).group(1))
    with serving(store, port=port) as url:
        yield url


def _http_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return response.read().decode()


def test_from_serve_to_the_flow_run_page_its_artifacts_tab_and_the_map(
    server: Server, deployed_run: DeployedRun, chromium: str, tmp_path: Path
) -> None:
    """What a user clicks, in one browser tab driven through the DevTools protocol: the run
    in `microscale serve`'s list, its Prefect page, the Artifacts tab, the pipeline's
    summary there, the map the summary links over HTTP.

    Clicks, not URLs: the flow-run page resets ``?tab=Artifacts`` to its Logs tab on a
    fresh load (the tab is hidden until the run is fetched).
    """
    run, params = deployed_run.flow_run, deployed_run.params
    with _api(server) as client:
        parent_summary = _run_artifacts(client, deployed_run, parent_only=True)["pipeline-summary"]
    run_page = f"{server.url}/runs/flow-run/{run.id}"
    key = json.dumps(f"pipeline-summary-{store_tag(params.store)}")
    with (
        _serve(params.store, params.results_url) as served,
        Browser(chromium, tmp_path / "cdp-profile") as browser,
    ):
        page = browser.page()
        # serve's list of runs: the run, completed, linked to its flow-run page
        page.navigate(f"{served}/")
        rows = "[...document.querySelectorAll('tr.run')]"
        row = f"{rows}.find(r => r.textContent.includes('{run.id}'))"
        assert page.wait_for(f"{row}?.className", what="the run in serve's list") == "run completed"
        link = f"[...{row}.querySelectorAll('a')].find(a => a.textContent == 'flow run')"
        assert page.evaluate(f"{link}.href") == run_page
        page.click(link)

        # the flow-run page, then its Artifacts tab: the parent run's own artifacts. On a
        # loaded machine the first click can come before the page is ready for it (the card
        # never came within 90 s at load 5-16): then open the page again and click again.
        card = (
            "[...document.querySelectorAll('a[href^=\"/artifacts/artifact/\"]')]"
            f".find(a => a.textContent.includes({key}))"
        )
        for attempt in range(1, ARTIFACTS_TAB_ATTEMPTS + 1):
            if attempt > 1:  # leave the page first, so that the waits below see the new one
                page.navigate("about:blank")
                page.wait_for("location.href == 'about:blank'", what="a blank page")
                page.navigate(run_page)
            page.wait_for(
                f"location.href.startsWith({json.dumps(run_page)}) && "
                "!!document.querySelector('li#artifacts')",
                what="the flow-run page's Artifacts tab",
            )
            page.click("document.querySelector('li#artifacts')")
            try:
                href = page.wait_for(
                    f"{card}?.getAttribute('href')", timeout=60, what=f"the card of {key}"
                )
                break
            except AssertionError:
                if attempt == ARTIFACTS_TAB_ATTEMPTS:
                    raise
        assert href == f"/artifacts/artifact/{parent_summary.id}"
        page.click(card)

        # the summary's page: the map linked over HTTP, and its image shown
        map_link = "document.querySelector('a[href$=\"results/map.html\"]')"
        assert page.wait_for(f"{map_link}?.href", what="the map's link") == (
            f"{served}/results/map.html"
        )
        assert page.evaluate("!!document.querySelector('img[src$=\"results/map.png\"]')")
        page.click(map_link)

        # the link opens the interactive map, served by `microscale serve` (in a new tab or
        # this one)
        tab = browser.page(f"{served}/results/map.html")
        text = tab.wait_for(
            "document.readyState == 'complete' && document.title + ' ' + document.body.innerText",
            what="the map page",
        )
    assert "microscale texture map (image level)" in text, text[:2000]


def test_the_store_records_the_deployed_run(deployed_run: DeployedRun) -> None:
    run, params = deployed_run.flow_run, deployed_run.params
    (record,) = read_runs(params.store).runs
    assert record.run_id == str(run.id) and record.outcome == "completed"
    assert record.counts["files_found"] >= 10 and record.counts["images"] == 10
    assert {o["path"] for o in record.outputs} >= {"results/map.html", "results/map.nc"}
    with _serve(params.store, params.results_url) as served:
        runs = json.loads(_http_get(f"{served}/runs.json"))["runs"]
    assert [r["run_id"] for r in runs] == [str(run.id)]
    assert {o["path"]: o["state"] for o in runs[0]["outputs"]}["results/map.html"] == "current"
