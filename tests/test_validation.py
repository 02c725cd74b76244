"""The shared argument checks (microscale._validation) and the modules that use them."""

import numpy as np
import pytest

from microscale import _validation as V
from microscale.distance import pairwise_distances
from microscale.errors import DtypeError, MicroscaleError
from microscale.sketch import sketch


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3", None])
def test_check_positive_int(bad):
    with pytest.raises(ValueError, match=r"The 'n' parameter must be a positive int\. Got"):
        V.check_positive_int(bad, "n")


def test_checks_return_plain_values():
    assert type(V.check_positive_int(np.int64(3), "n")) is int
    assert V.check_int(3, "n", minimum=3) == 3
    assert V.check_non_negative_int(0, "seed") == 0
    assert V.check_one_of("tile", "level", ("image", "tile")) == "tile"


@pytest.mark.parametrize(
    ("check", "match"),
    [
        (lambda: V.check_int(0, "k", minimum=1), r"The 'k' parameter must be an int >= 1\. Got 0"),
        (lambda: V.check_int(False, "k", minimum=0), "must be an int >= 0. Got False"),
        (lambda: V.check_non_negative_int(-1, "seed"), "'seed' parameter must be a non-negative"),
        (lambda: V.check_one_of("x", "level", ("image", "tile")), r"one of \('image', 'tile'\)"),
        (lambda: V.as_real_rows(np.ones(3), "X"), "X must be a 2-D array of shape"),
    ],
)
def test_messages(check, match):
    with pytest.raises(ValueError, match=match):
        check()


def test_a_complex_array_is_one_error_for_distances_and_sketches():
    Z = np.ones((3, 4), dtype=complex)
    for call in (lambda: pairwise_distances(Z), lambda: sketch(Z, n_components=2)):
        with pytest.raises(DtypeError, match="X must hold real numbers") as info:
            call()
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert isinstance(info.value, MicroscaleError)


def test_as_real_rows_does_not_copy():
    X = np.ones((2, 3), dtype=np.int16)
    assert V.as_real_rows(X, "X") is X


def test_renamed_keyword_keeps_the_old_name_for_one_release():
    assert V.renamed(3, None, new_name="n_components", old_name="dims", caller="f") == 3
    assert V.renamed(None, None, new_name="n_components", old_name="dims", caller="f") is None
    with pytest.warns(FutureWarning, match=r"f\(\): 'dims' is renamed 'n_components'"):
        assert V.renamed(None, [2], new_name="n_components", old_name="dims", caller="f") == [2]
    with pytest.raises(TypeError, match="got both 'n_components' and its old name 'dims'"):
        V.renamed([2], [2], new_name="n_components", old_name="dims", caller="f")
