"""The random multi-scale network and the ImageNet VGG-19 (issue 6): oracles and errors."""

import math
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from microscale import backbones as B
from microscale import weights as W
from microscale.texture import (
    VGG19Features,
    feature_slices,
    gram_vectors,
    n_features,
    texture_vectors,
)
from microscale.weights import (
    BGR_MEAN,
    CONV_LAYERS,
    VGGWeights,
    WeightsError,
    WeightsUnavailableError,
    load_weights,
)

CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def _images(n=2, size=24, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        img = np.cos(2 * np.pi * ((3 + i) * x + (1 + 2 * i) * y)) + 0.3 * rng.random((size, size))
        out.append((img - img.min()) / (img.max() - img.min()))
    return np.stack(out)


# --------------------------------------------------------------------------- random network


def _random_features_float64(img: np.ndarray, seed: int) -> torch.Tensor:
    """Plain 3-channel float64 convolutions, 'same' zero padding, ReLU: (1024, H*W)."""
    x = torch.from_numpy(img * 255.0)[None, None].repeat(1, 3, 1, 1)
    x = x - torch.tensor(BGR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    maps = [
        F.relu(F.conv2d(x, torch.from_numpy(w).double(), padding=k // 2))
        for k, w in B.random_filters(seed).items()
    ]
    f = torch.cat(maps, dim=1)[0]
    return f.reshape(f.shape[0], -1)


def test_random_filters_are_seeded_zero_mean_and_sized():
    a, b = B.random_filters(0), B.random_filters(0)
    c = B.random_filters(1)
    assert list(a) == list(B.RANDOM_FILTER_SIZES) == [3, 5, 7, 11, 15, 23, 37, 55]
    for k in a:
        assert a[k].shape == (128, 3, k, k) and a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.allclose(a[k], c[k])
        np.testing.assert_allclose(a[k].mean(axis=(1, 2, 3)), 0, atol=1e-6)
        assert np.abs(a[k]).max() <= 2 * math.sqrt(6 / (3 * k * k))
    # the documented recipe: He-uniform draws in size order, then each filter's mean removed
    rng = np.random.default_rng(0)
    for k in B.RANDOM_FILTER_SIZES:
        bound = math.sqrt(6 / (3 * k * k))
        w = rng.uniform(-bound, bound, size=(128, 3, k, k))
        np.testing.assert_allclose(a[k], w - w.mean(axis=(1, 2, 3), keepdims=True), atol=1e-6)
    assert B.describe_backbone("random").sha256 == B.describe_backbone("random:0").sha256
    assert B.describe_backbone("random:0").sha256 != B.describe_backbone("random:1").sha256


def test_random_vectors_are_deterministic_and_differ_across_seeds():
    imgs = _images(2, 24)
    v0 = texture_vectors(imgs, weights="random:0", device="cpu")
    again = texture_vectors(imgs, weights="random", device="cpu", batch_size=1)
    v1 = texture_vectors(imgs, weights="random:1", device="cpu")
    assert v0.shape == (2, 1024 * 1025 // 2) == (2, n_features(weights="random"))
    np.testing.assert_allclose(again, v0, rtol=1e-5, atol=1e-6 * np.abs(v0).max())
    assert np.linalg.norm(v1 - v0) > 0.1 * np.linalg.norm(v0)


def test_random_vector_matches_float64_convolution_and_hand_gram():
    img = _images(1, 24, seed=3)[0]
    ours = texture_vectors(img, weights="random:2", device="cpu")[0].astype(np.float64)
    f = _random_features_float64(img, 2)
    n, m = f.shape
    g = (f @ f.T).numpy() / (2 * n * m)  # sqrt(1 / (4 N^2 M^2)) G
    r, c = np.triu_indices(n)
    ref = g[r, c] * np.where(r == c, 1.0, math.sqrt(2.0))
    assert ours.shape == ref.shape
    assert np.linalg.norm(ours - ref) <= 1e-5 * np.linalg.norm(ref)


def test_random_squared_distance_is_the_gram_loss():
    imgs = _images(2, 20, seed=5)
    v = texture_vectors(imgs, weights="random:4", device="cpu").astype(np.float64)
    fa, fb = (_random_features_float64(im, 4) for im in imgs)
    n, m = fa.shape
    loss = float((((fa @ fa.T) - (fb @ fb.T)) ** 2).sum()) / (4 * n**2 * m**2)
    np.testing.assert_allclose(((v[0] - v[1]) ** 2).sum(), loss, rtol=1e-4)


def test_random_network_layers_and_names():
    assert feature_slices(weights="random:7") == {"multiscale": slice(0, 524800)}
    assert n_features() == 305888  # the default is untouched
    with pytest.raises(ValueError, match="random backbone has one layer"):
        n_features(["conv1_1"], weights="random")
    with pytest.raises(ValueError, match="'random' or 'random:SEED'"):
        texture_vectors(_images(1, 16), weights="random:x")
    with pytest.raises(ValueError, match="no VGG weights"):
        load_weights("random")


def test_random_network_is_differentiable_for_synthesis():
    model = B.RandomMultiscaleFeatures(0)
    x = torch.rand(1, 20, 20, requires_grad=True)
    loss = gram_vectors(model(model.preprocess(x))).pow(2).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- Gatys normalisation


def _he_weights(seed=0) -> VGGWeights:
    rng = np.random.default_rng(seed)
    params, in_ch = {}, 3
    for layer in CONV_LAYERS:
        out_ch = CHANNELS[int(layer[4])]
        std = math.sqrt(2 / (9 * in_ch))
        params[f"{layer}.weight"] = (rng.standard_normal((out_ch, in_ch, 3, 3)) * std).astype(
            np.float32
        )
        params[f"{layer}.bias"] = (0.01 * rng.standard_normal(out_ch)).astype(np.float32)
        in_ch = out_ch
    return VGGWeights(params, np.asarray(BGR_MEAN), "0" * 64, "<test>")


def _mean_activations(weights: VGGWeights, images: np.ndarray) -> dict[str, np.ndarray]:
    """Independent float64 forward (torchvision's graph, max -> average pooling)."""
    import torchvision

    net = torchvision.models.vgg19(weights=None).features.double().eval()
    convs = [mod for mod in net if isinstance(mod, torch.nn.Conv2d)]
    for conv, name in zip(convs, CONV_LAYERS, strict=True):
        conv.weight.data = torch.from_numpy(weights.params[f"{name}.weight"]).double()
        conv.bias.data = torch.from_numpy(weights.params[f"{name}.bias"]).double()
    x = torch.from_numpy(images.astype(np.float64) * 255.0)[:, None].repeat(1, 3, 1, 1)
    x = x - torch.tensor(np.asarray(weights.mean_bgr)).view(1, 3, 1, 1)
    out, names = {}, iter(CONV_LAYERS)
    with torch.no_grad():
        for mod in net:
            if isinstance(mod, torch.nn.MaxPool2d):
                mod = torch.nn.AvgPool2d(2)
            x = mod(x)
            if isinstance(mod, torch.nn.ReLU):
                out[next(names)] = x.mean(dim=(0, 2, 3)).numpy()
    return out


def test_gatys_normalisation_makes_every_mean_activation_one():
    raw = _he_weights(0)
    imgs = _images(3, 32, seed=1).astype(np.float32)
    norm, before = B.gatys_normalize(raw, imgs, device="cpu")
    after = _mean_activations(norm, imgs)
    for name in CONV_LAYERS:
        live = before[name] > 0
        assert live.mean() > 0.5, name
        # float32 parameters and a filter that barely fires at conv5 (2x2 maps) bound rtol
        np.testing.assert_allclose(after[name][live], 1.0, rtol=1e-4, err_msg=name)
        assert np.median(np.abs(after[name][live] - 1)) < 1e-6, name
        np.testing.assert_array_equal(  # a filter that never fires is left alone
            norm.params[f"{name}.weight"][~live], raw.params[f"{name}.weight"][~live]
        )
    # the activations it reports are those of the unnormalised net at layer 1
    np.testing.assert_allclose(
        before["conv1_1"], _mean_activations(raw, imgs)["conv1_1"], rtol=1e-5
    )
    # only a positive rescaling per filter: directions are unchanged
    w0, w1 = raw.params["conv3_2.weight"][0].ravel(), norm.params["conv3_2.weight"][0].ravel()
    assert np.dot(w0, w1) / (np.linalg.norm(w0) * np.linalg.norm(w1)) == pytest.approx(1, abs=1e-6)
    # idempotent: a normalised network is already normalised
    twice, again = B.gatys_normalize(norm, imgs, device="cpu")
    for name in CONV_LAYERS:
        live = again[name] > 0
        np.testing.assert_allclose(again[name][live], 1.0, rtol=2e-3)
    # same layout as the normalised VGG-19: it runs through the same network code
    assert set(norm.params) == set(raw.params)
    assert all(norm.params[k].shape == raw.params[k].shape for k in raw.params)
    assert len(norm.sha256) == 64 and norm.sha256 == B.params_sha256(norm.params)
    v = texture_vectors(imgs, weights=norm, device="cpu")
    assert v.shape == (3, 305888) and np.isfinite(v).all()
    assert isinstance(VGG19Features(norm), VGG19Features)


def test_gatys_normalisation_rejects_unmapped_images():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        B.gatys_normalize(_he_weights(0), _images(1, 16) * 2, device="cpu")


# --------------------------------------------------------------------------- ImageNet VGG-19


def _torchvision_state(seed=0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision VGG-19's convolution names and shapes (random values)."""
    gen = torch.Generator().manual_seed(seed)
    state, in_ch = {}, 3
    for idx, layer in zip(B.TORCHVISION_CONV_INDEX, CONV_LAYERS, strict=True):
        out_ch = CHANNELS[int(layer[4])]
        std = math.sqrt(2 / (9 * in_ch))
        state[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
        state[f"features.{idx}.bias"] = 0.01 * torch.randn(out_ch, generator=gen)
        in_ch = out_ch
    state["classifier.6.bias"] = torch.zeros(1000)  # the classifier is ignored
    return state


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache and microscale cache under tmp_path."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    small = _images(2, 32, seed=9).astype(np.float32)
    monkeypatch.setattr(W, "default_normalization_images", lambda: small)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return checkpoints


def test_imagenet_absent_error_names_both_ways(hub):
    with pytest.raises(WeightsUnavailableError, match="not available on this machine") as info:
        B.describe_backbone("vgg19-imagenet")
    msg = str(info.value)
    assert str(hub / B.IMAGENET_FILE) in msg  # the torch hub cache
    assert "weights='/path/to/vgg19-dcbb9e9d.pth'" in msg  # or a path
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        B.load_imagenet_weights(hub / "missing.pth")


def test_imagenet_from_hub_cache_and_from_path(hub, tmp_path, monkeypatch):
    hub.mkdir(parents=True)
    state = _torchvision_state(0)
    torch.save(state, hub / B.IMAGENET_FILE)
    w = load_weights("vgg19-imagenet")
    assert w.params["conv5_1.weight"].shape == (512, 512, 3, 3)
    np.testing.assert_allclose(w.mean_bgr, 255 * np.array(B.TORCHVISION_MEAN))
    cached = list((tmp_path / "cache" / "microscale").glob("vgg19_imagenet_gatys_*.safetensors"))
    assert len(cached) == 1
    from safetensors import safe_open

    with safe_open(str(cached[0]), framework="numpy") as fh:
        meta = fh.metadata()
    from microscale.weights import _sha256

    assert meta["source_sha256"] == _sha256(hub / B.IMAGENET_FILE)
    assert meta["weights_sha256"] == w.sha256 == B.params_sha256(w.params)
    # second time: from the cache, no normalisation
    monkeypatch.setattr(W, "gatys_normalize", lambda *a, **k: pytest.fail("not cached"))
    assert load_weights("vgg19-imagenet").sha256 == w.sha256
    # the same file given by path (texture_vectors accepts it) is the same backbone
    other = tmp_path / "elsewhere" / "my-vgg19.pth"
    other.parent.mkdir()
    other.write_bytes((hub / B.IMAGENET_FILE).read_bytes())
    assert B.describe_backbone(other).sha256 == w.sha256
    v = texture_vectors(_images(1, 32), weights=other, device="cpu")
    assert v.shape == (1, 305888) and np.isfinite(v).all()


def test_imagenet_conv1_folds_torchvision_input_normalisation():
    state = _torchvision_state(1)
    params, mean = W._fold_input_normalization(
        {"conv1_1.weight": state["features.0.weight"].numpy()}
    )
    g = torch.from_numpy(_images(1, 20)[0])
    mu = torch.tensor(B.TORCHVISION_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    sd = torch.tensor(B.TORCHVISION_STD, dtype=torch.float64).view(1, 3, 1, 1)
    tv_in = (g[None, None].repeat(1, 3, 1, 1) - mu) / sd
    ours_in = g[None, None].repeat(1, 3, 1, 1) * 255 - torch.from_numpy(mean).view(1, 3, 1, 1)
    ref = F.conv2d(tv_in, state["features.0.weight"].double(), padding=1)
    got = F.conv2d(ours_in, torch.from_numpy(params["conv1_1.weight"]).double(), padding=1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_unsafe_pth_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": _Evil(marker)}, path)
    raw = path.read_bytes()
    assert b"system" in raw
    with pytest.raises(WeightsError, match="Refused to load"):
        B.read_torchvision_vgg19(path)
    assert not marker.exists()
    # plain pickles are refused the same way; a wrong state dict names what is missing
    bad = tmp_path / "bad.pth"
    bad.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(WeightsError, match="Refused to load|not a readable"):
        B.read_torchvision_vgg19(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="lacks the tensor 'features.0.bias'"):
        B.read_torchvision_vgg19(wrong)


def test_default_normalisation_images_are_synthetic_textures_in_unit_range():
    imgs = B.default_normalization_images(size=16, n=2)
    assert imgs.shape == (8, 16, 16) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.std() > 0.1
    np.testing.assert_array_equal(imgs, B.default_normalization_images(size=16, n=2))


def test_imagenet_row_in_the_backbone_comparison(hub, tmp_path):
    """With the weights present (here: a synthetic torchvision state dict), the paper's
    comparison has an ImageNet VGG-19 row beside the spectrum, with finite metrics."""
    from microscale.paper import PaperConfig, run_backbone_comparison

    hub.mkdir(parents=True)
    torch.save(_torchvision_state(2), hub / B.IMAGENET_FILE)
    config = PaperConfig(out=tmp_path / "paper", size=32, grid_size=32, angle_n=(12,),
                         amplitudes=(0.0, 3.0), trials=1, grid_n=3, synthesis_steps=0, device="cpu",
                         backbones=("vgg19-imagenet",))  # fmt: skip
    angle, grid, unavailable = run_backbone_comparison(config)
    assert unavailable == {}
    assert "vgg19-imagenet" in list(angle.descriptor.values)
    assert "vgg19-imagenet" in list(grid.descriptor.values)
    assert np.isfinite(angle.rmse.sel(descriptor="vgg19-imagenet")).all()
    assert np.isfinite(grid.r2.sel(descriptor="vgg19-imagenet")).all()
