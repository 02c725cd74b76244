"""Tests for microscale.report: the paper's findings beside ours, with verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from microscale import report
from microscale.results import build_angle_dataset, build_stress_curves

A = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def _angle(ps_rmse, cnn_rmse, ps_stress, cnn_stress, trials=3) -> xr.Dataset:
    """An angle-task dataset with the given mean curves (trials spread symmetrically)."""
    spread = np.linspace(-0.1, 0.1, trials)
    curves = {
        "rmse": np.array([cnn_rmse, ps_rmse]),
        "stress": np.array([cnn_stress, ps_stress]),
    }
    arrays = {
        name: (c[:, :, None, None] * (1 + spread[None, None, None, :]))
        for name, c in curves.items()
    }
    return build_angle_dataset(
        rmse=arrays["rmse"],
        stress=arrays["stress"],
        embedding_2d=np.zeros((2, len(A), 4, 2)),
        theta=np.arange(4) * np.pi / 4,
        descriptors=("cnn", "ps"),
        amplitudes=A,
        n_images=(50,),
    )


def _grid(r2_k: float, r2_A: float, angle: float, cnn_curve, ps_curve) -> xr.Dataset:
    dims = list(range(1, len(cnn_curve) + 1))
    r2 = np.array([[[r2_k, r2_A]] * len(dims)] * 2)
    return xr.Dataset(
        {
            "r2": (("descriptor", "n_components", "parameter"), r2),
            "regression_angle": (("descriptor", "n_components"), np.full((2, len(dims)), angle)),
            "stress": (("descriptor", "n_components"), np.array([cnn_curve, ps_curve])),
        },
        coords={
            "descriptor": ["cnn", "ps"],
            "n_components": dims,
            "parameter": ["k", "A"],
            "image": np.arange(1000),
        },
    )


PAPER_LIKE = dict(
    ps_rmse=[0.6, 0.4, 0.08, 0.05, 0.2, 0.4, 0.6],
    cnn_rmse=[0.01, 0.02, 0.03, 0.04, 0.06, 0.2, 0.4],
    ps_stress=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35],
    cnn_stress=[0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25],
)
EXPONENTIAL = [0.4 * 0.6**d for d in range(6)]  # falls 13x by D* = 6
SLOW = [0.4 - 0.03 * d for d in range(6)]


def _verdicts(findings):
    return {f.figure: f.verdict for f in findings}


def test_paper_like_results_are_all_reproduced():
    findings = report.compare_with_paper(
        angle=_angle(**PAPER_LIKE), grid=_grid(0.97, 0.95, 88.0, EXPONENTIAL, SLOW)
    )
    assert _verdicts(findings) == {
        "Fig. 6, PS": "reproduced",
        "Fig. 6, CNN": "reproduced",
        "Fig. 7, CNN": "reproduced",
        "Fig. 7, PS": "reproduced",
        "Fig. 8": "reproduced",
        "Table I": "reproduced",
        "Eq. 14": "reproduced",
    }
    ps = next(f for f in findings if f.figure == "Fig. 6, PS")
    # window edges interpolated in log RMSE between the sampled A
    lo = 1 + np.log(0.1 / 0.4) / np.log(0.08 / 0.4)
    assert f"{lo:.2f} <= A <=" in ps.ours


def test_the_issue_11_state_of_main_is_not_reproduced():
    """The numbers measured before the calibration (issue 11) get the verdicts they deserve."""
    angle = _angle(
        ps_rmse=[0.572, 0.391, 0.045, 0.031, 0.036, 0.059, 0.077],  # window reaches A ~ 7
        cnn_rmse=[0.012, 0.015, 0.02, 0.03, 0.04, 0.045, 0.052],  # never degrades
        ps_stress=[0.3, 0.25, 0.2, 0.15, 0.12, 0.1, 0.1],
        cnn_stress=[0.10, 0.05, 0.02, 0.01, 0.006, 0.006, 0.006],  # falls with A
    )
    grid = _grid(0.993, 0.003, 40.0, EXPONENTIAL, SLOW)
    verdicts = _verdicts(report.compare_with_paper(angle=angle, grid=grid))
    assert verdicts["Fig. 6, PS"] == "partly"  # overlaps [2, 3.5] but does not fail above
    assert verdicts["Fig. 6, CNN"] == "partly"  # good from 0, never degrades
    assert verdicts["Fig. 7, CNN"] == "not"
    assert verdicts["Fig. 7, PS"] == "not"
    assert verdicts["Table I"] == "partly"
    assert verdicts["Eq. 14"] == "not"


def test_flat_stress_curves_do_not_reproduce_fig_8():
    flat = [0.3] * 6
    finding = report._stress_finding(_grid(1, 1, 90, flat, flat).stress, "x")
    assert finding.verdict == "not"
    finding = report._stress_finding(_grid(1, 1, 90, EXPONENTIAL, EXPONENTIAL).stress, "x")
    assert finding.verdict == "partly"  # the CNN falls exponentially, but so does the PS


def test_angle_only_and_stress_only_runs_give_their_rows():
    findings = report.compare_with_paper(angle=_angle(**PAPER_LIKE))
    assert [f.figure for f in findings] == [
        "Fig. 6, PS",
        "Fig. 6, CNN",
        "Fig. 7, CNN",
        "Fig. 7, PS",
    ]
    curves = build_stress_curves(
        stress=np.array([[EXPONENTIAL] * 3, [SLOW] * 3]),
        descriptors=("cnn", "ps"),
        amplitudes=(0.0, 2.0, 4.0),
        n_components=range(1, 7),
    )
    (fig8,) = report.compare_with_paper(angle_stress=curves)
    assert fig8.figure == "Fig. 8" and fig8.verdict == "reproduced"
    assert "angle task (A = 2)" in fig8.ours
    assert report.compare_with_paper() == []


def test_summary_counts_verdicts_and_never_claims_reproduced_for_partial_rows():
    angle = _angle(**{**PAPER_LIKE, "cnn_stress": PAPER_LIKE["cnn_stress"][::-1]})
    text = report.summary_tables(angle=angle, angle_stress=None, grid=None, synthesis=None)
    assert "3 of 4 reproduced, 0 partly, 1 not." in text
    assert "| Fig. 7, CNN | the D* = 2 stress grows with A |" in text
    assert "**not**" in text
    assert "### 3-D task" not in text  # the task did not run


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x=[0, 1], error=[0.1, 0.2, 0.3]), "same length"),
        (dict(x=[1, 0], error=[0.1, 0.2]), "strictly increasing"),
        (dict(x=[0, 1], error=[0.0, 0.2]), "must be positive"),
        (dict(x=[0, 1], error=[0.1, 0.2], threshold=0.0), "'threshold' parameter must be > 0"),
        (dict(x=[0, 1], error=[np.nan, 0.2]), "NaN or infinite"),
    ],
)
def test_good_window_validation(kwargs, match):
    from microscale.evaluate import good_window

    with pytest.raises(ValueError, match=match):
        good_window(**kwargs)


def test_good_window_edges():
    from microscale.evaluate import good_window

    assert good_window([0, 1, 2], [0.05, 0.06, 0.07]) == (0.0, float("inf"))
    lo, hi = good_window([0, 1, 2], [0.5, 0.5, 0.5])
    assert np.isnan(lo) and np.isnan(hi)
    # only the first good stretch counts
    assert good_window([0, 1, 2, 3, 4], [0.2, 0.05, 0.2, 0.05, 0.2])[1] == pytest.approx(1.5)
