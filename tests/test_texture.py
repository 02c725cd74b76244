import math

import numpy as np
import pytest
import torch

from microscale.texture import (
    DEFAULT_LAYERS,
    feature_slices,
    gram_vectors,
    n_features,
    texture_vectors,
)
from microscale.weights import CONV_LAYERS


def _image(size=48, seed=0):
    """A fixed, non-trivial test image (stripes plus noise), values in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.5 + 0.4 * np.cos(2 * np.pi * (4 * x + 2 * y)) + 0.1 * rng.random((size, size))
    return (img - img.min()) / (img.max() - img.min())


def test_length_is_305888():
    assert n_features() == 305888
    sl = feature_slices()
    assert list(sl) == list(DEFAULT_LAYERS)
    assert sl["conv5_1"].stop == 305888
    assert n_features(["conv1_1"]) == 64 * 65 // 2


def test_gram_vector_by_hand():
    # one image, 2 channels, 1x3 pixels: F = [[1, 2, 3], [0, 1, -1]]
    fmap = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]).reshape(1, 2, 1, 3)
    vec = gram_vectors([fmap])[0].numpy()
    # G = [[14, -1], [-1, 2]]; scale 1 / (2 N M) = 1 / 12; triu order (0,0), (0,1), (1,1)
    np.testing.assert_allclose(vec, np.array([14, -math.sqrt(2), 2]) / 12, rtol=1e-6)
    # layer weight w scales by sqrt(w)
    np.testing.assert_allclose(gram_vectors([fmap], layer_weights=[4.0])[0].numpy(), 2 * vec)


def test_squared_distance_is_gatys_loss():
    rng = np.random.default_rng(1)
    fa = [torch.from_numpy(rng.random((1, n, h, h), dtype=np.float32)) for n, h in [(3, 5), (4, 2)]]
    fb = [torch.from_numpy(rng.random((1, n, h, h), dtype=np.float32)) for n, h in [(3, 5), (4, 2)]]
    weights = [0.5, 2.0]
    va = gram_vectors(fa, layer_weights=weights)[0].double()
    vb = gram_vectors(fb, layer_weights=weights)[0].double()
    loss = 0.0
    for a, b, w in zip(fa, fb, weights, strict=True):
        n, m = a.shape[1], a.shape[2] * a.shape[3]
        ga = a.double().reshape(n, m) @ a.double().reshape(n, m).T
        gb = b.double().reshape(n, m) @ b.double().reshape(n, m).T
        loss += w * ((ga - gb) ** 2).sum() / (4 * n**2 * m**2)
    np.testing.assert_allclose(((va - vb) ** 2).sum().item(), loss.item(), rtol=1e-5)


def test_tiles_average_to_the_whole():
    # Gram vectors of side-by-side feature maps = pixel-weighted mean of the parts
    rng = np.random.default_rng(2)
    left = torch.from_numpy(rng.random((1, 6, 4, 3), dtype=np.float32))
    right = torch.from_numpy(rng.random((1, 6, 4, 5), dtype=np.float32))
    whole = gram_vectors([torch.cat([left, right], dim=3)])[0]
    parts = (3 * gram_vectors([left])[0] + 5 * gram_vectors([right])[0]) / 8
    np.testing.assert_allclose(whole.numpy(), parts.numpy(), rtol=1e-5)


def _independent_vectors(img: np.ndarray, weights) -> np.ndarray:
    """The five layers in plain float64 torch on torchvision's VGG-19 graph, max->avg pool."""
    import torchvision

    net = torchvision.models.vgg19(weights=None).features.double().eval()
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    for conv, name in zip(convs, CONV_LAYERS, strict=True):
        conv.weight.data = torch.from_numpy(weights.params[f"{name}.weight"]).double()
        conv.bias.data = torch.from_numpy(weights.params[f"{name}.bias"]).double()
    x = torch.from_numpy(img * 255.0)[None, None].repeat(1, 3, 1, 1)
    x = x - torch.tensor(weights.mean_bgr).view(1, 3, 1, 1)
    taps = {1, 6, 11, 20, 29}  # ReLU outputs of conv1_1 .. conv5_1 in torchvision's list
    parts = []
    with torch.no_grad():
        for i, module in enumerate(net[:30]):
            if isinstance(module, torch.nn.MaxPool2d):
                module = torch.nn.AvgPool2d(2)
            x = module(x)
            if i in taps:
                n, m = x.shape[1], x.shape[2] * x.shape[3]
                g = (x.reshape(n, m) @ x.reshape(n, m).T).numpy() / (2 * n * m)
                r, c = np.triu_indices(n)
                parts.append(g[r, c] * np.where(r == c, 1, np.sqrt(2)))
    return np.concatenate(parts)


@pytest.mark.weights
def test_texture_vector_matches_independent_computation(vgg_weights):
    img = _image(48)
    ours = texture_vectors(img, weights=vgg_weights, device="cpu")[0].astype(np.float64)
    ref = _independent_vectors(img, vgg_weights)
    assert ours.shape == ref.shape == (305888,)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert rel < 1e-5
    for name, sl in feature_slices().items():  # every layer, not just the big ones
        assert np.linalg.norm(ours[sl] - ref[sl]) <= 1e-4 * np.linalg.norm(ref[sl]), name


@pytest.mark.weights
def test_batching_and_normalisation_are_consistent(vgg_weights):
    imgs = np.stack([_image(32, s) for s in range(5)])
    one = texture_vectors(imgs, weights=vgg_weights, batch_size=1, device="cpu")
    many = texture_vectors(imgs, weights=vgg_weights, batch_size=3, device="cpu")
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-7 * np.abs(one).max())
    # raw 16-bit data normalised by min/max gives the same vectors as [0, 1] input
    raw = (imgs * 4000 + 100).astype(np.uint16)
    np.testing.assert_allclose(
        texture_vectors(raw, weights=vgg_weights, device="cpu"),
        texture_vectors(raw.astype(np.float64), weights=vgg_weights, device="cpu"),
        rtol=1e-5,
        atol=1e-6 * np.abs(one).max(),
    )
    assert np.isfinite(many).all()
    sub = texture_vectors(imgs[:2], weights=vgg_weights, layers=["conv2_1", "conv1_1"])
    assert sub.shape == (2, n_features(["conv1_1", "conv2_1"]))
    np.testing.assert_allclose(sub, one[:2, : sub.shape[1]], rtol=1e-4, atol=1e-9)


@pytest.mark.weights
def test_bfloat16_distances_stay_within_the_measured_error_and_float32_is_untouched(
    vgg_weights,
):
    from scipy.spatial.distance import pdist

    imgs = np.stack([_image(48, s) for s in range(6)])
    imgs[3:] = imgs[3:] ** 2  # two families: distances of two scales
    exact = texture_vectors(imgs, weights=vgg_weights, device="cpu")
    fast = texture_vectors(imgs, weights=vgg_weights, device="cpu", precision="bfloat16")
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    d32, d16 = pdist(exact.astype(np.float64)), pdist(fast.astype(np.float64))
    err = np.abs(d16 - d32) / np.median(d32)  # near pairs are 4-7 % of the median here
    assert (np.abs(d16 - d32) / d32).max() > 1e-6  # reduced precision is in effect
    assert err.max() < 1.5e-2  # measured 0.3-0.6 % of the median distance
    again = texture_vectors(imgs, weights=vgg_weights, device="cpu")
    np.testing.assert_array_equal(again, exact)  # the float32 model was not converted


@pytest.mark.weights
@pytest.mark.gpu
def test_gpu_bfloat16_is_close_to_cpu_float32(vgg_weights):
    imgs = np.stack([_image(64, s) for s in range(3)])
    cpu = texture_vectors(imgs, weights=vgg_weights, device="cpu")
    gpu = texture_vectors(imgs, weights=vgg_weights, device="cuda", precision="bfloat16")
    assert np.abs(gpu - cpu).max() <= 2e-2 * np.abs(cpu).max()


@pytest.mark.weights
@pytest.mark.gpu
def test_gpu_matches_cpu(vgg_weights):
    imgs = np.stack([_image(64, s) for s in range(3)])
    before = torch.backends.cudnn.conv.fp32_precision
    cpu = texture_vectors(imgs, weights=vgg_weights, device="cpu")
    gpu = texture_vectors(imgs, weights=vgg_weights, device="cuda")
    assert np.abs(gpu - cpu).max() <= 1e-4 * np.abs(cpu).max()
    assert torch.backends.cudnn.conv.fp32_precision == before  # TF32 setting restored


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (np.random.default_rng(0).random((2, 8, 8)), {}, "at least 16x16"),
        (np.ones((1, 32, 32)), {}, "is constant"),
        (np.full((1, 32, 32), np.nan), {}, "NaN"),
        (np.random.default_rng(0).random((32, 32)) * 3, {"normalize": None}, "must lie in"),
        (np.random.default_rng(0).random((32, 32)), {"layers": ["pool1"]}, "'layers' parameter"),
        (np.random.default_rng(0).random((32, 32)), {"batch_size": 0}, "'batch_size'"),
        (np.random.default_rng(0).random((32, 32)), {"layer_weights": [1, 2]}, "'layer_weights'"),
        (np.random.default_rng(0).random((3, 32, 32, 3)), {}, "luminance"),
        (np.random.default_rng(0).random((32, 32)), {"precision": "fp16"}, "'precision'"),
    ],
)
def test_validation(images, kwargs, match):
    # validation comes before any weights are needed
    with pytest.raises(ValueError, match=match):
        texture_vectors(images, weights="/nonexistent/weights.pkl", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu():
    with pytest.raises(ValueError, match="no CUDA device"):
        texture_vectors(_image(32), weights="/nonexistent.pkl", device="cuda")


def test_import_microscale_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, microscale; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
