"""CMIC losses against a direct float64 numpy computation of the paper's formulas."""

import numpy as np
import pytest
import torch

from ibsr.model import category_loss, cmic_loss, instance_loss


def numpy_losses(scores, image_shape, shape_category, image_category, tau=0.1, beta1=0.2):
    s = np.asarray(scores, dtype=np.float64)
    sim = np.exp(s / tau)  # S[i_shape, j_image]
    n_shapes, n_images = s.shape
    instance, category = [], []
    for j in range(n_images):
        normalizer = sim[:, j].sum()
        instance.append(-np.log(sim[image_shape[j], j] / normalizer))
        same = [i for i in range(n_shapes) if shape_category[i] == image_category[j]]
        category.append(np.mean([-np.log(sim[i, j] / normalizer) for i in same]))
    instance, category = np.mean(instance), np.mean(category)
    return instance + beta1 * category, instance, category


def random_batch(seed, n_shapes=6, n_images=9, n_categories=3):
    rng = np.random.default_rng(seed)
    shape_category = rng.integers(0, n_categories, n_shapes)
    image_shape = rng.integers(0, n_shapes, n_images)
    image_category = shape_category[image_shape]
    scores = rng.uniform(-1, 1, (n_shapes, n_images))  # cosine-like scores
    return scores, image_shape, shape_category, image_category


@pytest.mark.parametrize("seed", range(5))
def test_losses_match_numpy(seed):
    scores, image_shape, shape_category, image_category = random_batch(seed)
    expected = numpy_losses(scores, image_shape, shape_category, image_category)
    got = cmic_loss(
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(image_shape),
        torch.tensor(shape_category),
        torch.tensor(image_category),
    )
    np.testing.assert_allclose([float(t) for t in got], expected, rtol=1e-5)
    assert float(got.total) == pytest.approx(float(got.instance) + 0.2 * float(got.category), rel=1e-6)


def test_parts_and_parameters():
    scores, image_shape, shape_category, image_category = random_batch(11, n_shapes=4, n_images=4)
    s = torch.tensor(scores, dtype=torch.float64)
    total, inst, cat = numpy_losses(scores, image_shape, shape_category, image_category, tau=0.5, beta1=1.0)
    assert float(instance_loss(s, torch.tensor(image_shape), tau=0.5)) == pytest.approx(inst, rel=1e-10)
    assert float(category_loss(s, torch.tensor(shape_category), torch.tensor(image_category), tau=0.5)) == pytest.approx(cat, rel=1e-10)
    got = cmic_loss(s, torch.tensor(image_shape), torch.tensor(shape_category), torch.tensor(image_category), tau=0.5, beta1=1.0)
    assert float(got.total) == pytest.approx(total, rel=1e-10)


def test_gradients_pull_the_right_shapes_up():
    scores, image_shape, shape_category, image_category = random_batch(2)
    s = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    instance_loss(s, torch.tensor(image_shape)).backward()
    own = s.grad[torch.tensor(image_shape), torch.arange(len(image_shape))]
    assert (own < 0).all()  # raising an image's own shape score lowers the instance loss
    s.grad = None
    category_loss(s, torch.tensor(shape_category), torch.tensor(image_category)).backward()
    same = torch.tensor(shape_category[:, None] == image_category[None, :])
    assert ((s.grad * same).sum(dim=0) < 0).all()  # same-category shapes as a group are pulled up


def test_category_loss_without_same_category_shape_is_finite():
    s = torch.zeros(2, 1)
    value = category_loss(s, torch.tensor([0, 0]), torch.tensor([5]))
    assert torch.isfinite(value) and float(value) == 0.0
