"""The package layout: old import paths keep working, modules import on their own, lightly."""

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import microscale
from microscale import pipeline
from microscale.stages import _runner, distances, embed, features, image_features

STAGES = (_runner, features, image_features, distances, embed)


@pytest.mark.parametrize("name", pipeline.__all__)
def test_every_old_pipeline_name_is_the_stage_modules_object(name):
    owners = [m for m in STAGES if name in vars(m)]
    errors = importlib.import_module("microscale.errors")
    owners += [errors] if name in vars(errors) else []
    assert owners, f"microscale.pipeline.{name} has no home in microscale.stages"
    assert all(getattr(pipeline, name) is getattr(m, name) for m in owners)


def test_old_pipeline_paths_that_docs_and_users_name():
    from microscale.pipeline import embed as old_embed
    from microscale.pipeline import run_distances as old_run_distances

    assert old_run_distances is distances.run_distances
    assert old_embed is embed.embed
    assert pipeline.DENSE_LIMIT == embed.DENSE_LIMIT
    assert pipeline.DEFAULT_WEIGHTS == "vgg19-normalized"


@pytest.mark.parametrize("name", importlib.import_module("microscale.manifold").__all__)
def test_every_old_manifold_name_is_the_new_modules_object(name):
    manifold = importlib.import_module("microscale.manifold")
    homes = [importlib.import_module(m) for m in ("microscale.metric_mds", "microscale.landmark")]
    (home,) = [m for m in homes if name in m.__all__]
    assert getattr(manifold, name) is getattr(home, name)


def test_the_package_functions_are_the_homes_objects():
    from microscale import landmark, metric_mds

    assert microscale.mds is metric_mds.mds and microscale.landmark_mds is landmark.landmark_mds
    assert (
        microscale.read_micrograph
        is importlib.import_module("microscale.io.decode").read_micrograph
    )


def test_setting_a_stage_setting_through_the_old_module_reaches_the_stage(monkeypatch):
    monkeypatch.setattr(pipeline, "READ_AHEAD", 3)
    monkeypatch.setattr(pipeline, "WORKER_TIMEOUT", 2.0)
    assert distances.READ_AHEAD == 3 and _runner.WORKER_TIMEOUT == 2.0
    monkeypatch.undo()
    assert distances.READ_AHEAD is None and _runner.WORKER_TIMEOUT == 60.0


# --------------------------------------------------------------------------- imports

PACKAGE = Path(microscale.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)
HEAVY = ("torch", "prefect", "distributed", "zarr", "matplotlib")


def _imports(module: str, *, top_level_only: bool) -> set[str]:
    """The microscale modules ``module`` imports (anywhere in it, or at module level)."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != module and m != "microscale"}


def test_no_import_cycle_between_microscale_modules_even_inside_functions():
    graph = {m: _imports(m, top_level_only=False) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [])


def test_weights_imports_no_network_module():
    assert not _imports("microscale.weights", top_level_only=False) & {
        "microscale.backbones",
        "microscale.texture",
        "microscale.synthesis",
    }


def test_every_module_imports_on_its_own():
    """Each module imported first, in a process without any microscale module loaded.

    The third-party libraries are imported once in a parent process; each module is then
    imported in a fork of it with every microscale module removed, so a module that only
    works when another one was imported first fails here.
    """
    code = textwrap.dedent(
        f"""
        import importlib, os, sys
        modules = {MODULES!r}
        for m in modules:
            importlib.import_module(m)  # loads every third-party dependency once
        failed = []
        for m in modules:
            pid = os.fork()
            if pid == 0:
                for name in [n for n in sys.modules if n.split(".")[0] == "microscale"]:
                    del sys.modules[name]
                try:
                    importlib.import_module(m)
                except BaseException as exc:
                    print(m, type(exc).__name__, exc, flush=True)
                    os._exit(1)
                os._exit(0)
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(m)
        sys.exit(1 if failed else 0)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_microscale_is_light():
    code = f"import sys, microscale; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
