"""One error family: every error class lives in microscale.errors, old paths re-export it."""

import ast
import builtins
import importlib
from pathlib import Path

import pytest

from microscale import errors

PACKAGE = Path(errors.__file__).parent

#: module -> error names it defined before microscale.errors existed (kept as re-exports)
OLD_HOMES = {
    "microscale.cluster": ["ClusterError", "GPUUnavailableError", "InsecureAddressError"],
    "microscale.intensity": ["ConstantImageError"],
    "microscale.io": [
        "DecodeError",
        "ImageTooLargeError",
        "ImageTooSmallError",
        "UnsupportedFormatError",
    ],
    "microscale.pipeline": ["FailedUnitsError", "NoWorkersError"],
    "microscale.search": ["WeightsMismatchError"],
    "microscale.store": [
        "IncompleteStageError",
        "StoreError",
        "StoreExistsError",
        "StoreLockedError",
        "StoreNotFoundError",
    ],
    "microscale.weights": ["WeightsError", "WeightsUnavailableError"],
}

ERRORS = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_a_microscale_error_and_a_builtin(cls):
    assert issubclass(cls, errors.MicroscaleError)
    if cls is not errors.MicroscaleError:
        builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not Exception]
        assert builtin[0] is not BaseException, f"{cls.__name__} refines no built-in error"


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("WeightsUnavailableError", "WeightsError"),
        ("WeightsUnavailableError", "FileNotFoundError"),
        ("WeightsMismatchError", "StoreError"),
        ("NoWorkersError", "ClusterError"),
        ("NoWorkersError", "RuntimeError"),
        ("FailedUnitsError", "RuntimeError"),
        ("StoreNotFoundError", "FileNotFoundError"),
        ("StoreLockedError", "BlockingIOError"),
        ("DecodeError", "OSError"),
        ("PageNotFoundError", "ValueError"),
        ("InsecureAddressError", "ValueError"),
        ("ConstantImageError", "ValueError"),
    ],
)
def test_hierarchy(child, parent):
    base = getattr(errors, parent, None) or getattr(builtins, parent)
    assert issubclass(getattr(errors, child), base)


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in OLD_HOMES.items() for n in names]
)
def test_old_import_paths_are_the_same_objects(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_no_error_class_is_defined_outside_errors():
    builtin_errors = {n for n in dir(builtins) if n.endswith(("Error", "Exception"))}
    known = builtin_errors | set(errors.__all__) | {"Exception"}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not bases & known, f"{path.name} defines {node.name}; move it to errors"


def test_failed_units_error_keeps_its_units():
    exc = errors.FailedUnitsError("2 units failed", failed={"a": "killed"})
    assert exc.failed == {"a": "killed"} and str(exc) == "2 units failed"
