"""The features flow takes its batch size from the user, else the machine's calibration."""

from __future__ import annotations

from flows.features import texture_setting
from flows.params import PipelineParams
from microscale import calibration as cal


def test_calibration_used_unless_batch_size_given(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    params = PipelineParams(archive=tmp_path, store=tmp_path / "s", tile_size=32, device="cpu")
    assert texture_setting(params) == (8, None)  # nothing measured here: the default

    clock = [0.0]

    def forward(setting, images):  # batch 1 channels-last fastest
        clock[0] += (
            len(images)
            * (1.0 if setting.batch_size == 1 else 2.0)
            / (1.5 if setting.channels_last else 1.0)
        )

    cal.calibrate_texture(
        device="cpu", image_size=32, batch_sizes=(1, 2), n_images=2, timer=lambda: clock[0],
        forward=forward,
    )  # fmt: skip
    assert texture_setting(params) == (1, True)
    assert texture_setting(params.model_copy(update={"batch_size": 4})) == (4, None)
