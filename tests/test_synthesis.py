import numpy as np
import pytest

from microscale import synth
from microscale.intensity import normalize_intensity
from microscale.synthesis import synthesize_texture
from microscale.texture import texture_vectors


@pytest.mark.weights
def test_synthesis_lowers_the_texture_loss(vgg_weights):
    original = synth.texture(0.7, 4.0, 1.0, size=32)
    res = synthesize_texture(original, steps=8, weights=vgg_weights, device="cpu")
    assert res.image.shape == (32, 32) and res.image.dtype == np.float32
    assert res.loss[0] == pytest.approx(res.initial_loss_noise)
    assert res.loss.min() < 0.5 * res.initial_loss_noise
    # independently: the result is far closer to the original in texture space than noise
    target = normalize_intensity(original)[0]
    noise = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    v = texture_vectors(
        np.stack([target, res.image, noise]), normalize=None, weights=vgg_weights, device="cpu"
    )
    assert ((v[1] - v[0]) ** 2).sum() < 0.5 * ((v[2] - v[0]) ** 2).sum()


def test_validation():
    with pytest.raises(ValueError, match="'steps' parameter must be a positive int"):
        synthesize_texture(np.eye(32), steps=0, weights="/nonexistent.pkl")
    with pytest.raises(ValueError, match="is constant"):
        synthesize_texture(np.ones((32, 32)), weights="/nonexistent.pkl")


def test_old_seed_keyword_is_random_state(vgg_weights):
    original = synth.texture(0.7, 4.0, 1.0, size=32)
    new = synthesize_texture(original, steps=2, random_state=4, weights=vgg_weights, device="cpu")
    with pytest.warns(FutureWarning, match="'seed' is renamed 'random_state'"):
        old = synthesize_texture(original, steps=2, seed=4, weights=vgg_weights, device="cpu")
    np.testing.assert_array_equal(new.image, old.image)
    default = synthesize_texture(original, steps=2, weights=vgg_weights, device="cpu")
    zero = synthesize_texture(original, steps=2, random_state=0, weights=vgg_weights, device="cpu")
    np.testing.assert_array_equal(default.image, zero.image)
