"""VGG-16, VGG16-GAP, DenseNet-121, MobileNetV2 and Inception-v3 against torchvision.

Each network imports a torchvision checkpoint with random weights and gives the same
eval-mode logits; inputs are small (64 px; 75 px for Inception-v3, its minimum).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax import models, weights
from skinjax.models import vgg

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

BATCH = 2


def _inception(aux_logits: bool = False) -> "torch.nn.Module":
    return torchvision.models.inception_v3(weights=None, aux_logits=aux_logits, init_weights=False)


# name -> (torchvision constructor, image size, an image's map at the first cam layer)
REFERENCES: dict[str, tuple[Callable[[], "torch.nn.Module"], int, tuple[int, ...]]] = {
    "vgg16": (lambda: torchvision.models.vgg16(weights=None), 64, (4, 4, 512)),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 64, (2, 2, 1024)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), 64, (2, 2, 1280)),
    "inception_v3": (_inception, 75, (1, 1, 2048)),
}


def _images(size: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(BATCH, size, size, 3)).astype(np.float32)


def _to_torch(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(x.transpose(0, 3, 1, 2))


def _randomize_batch_norm(model: "torch.nn.Module", size: int) -> None:
    """Random BatchNorm scales and shifts, and running statistics near the true ones.

    The statistics come from one training-mode pass over random images, then are
    perturbed: eval-mode BatchNorm then matters, yet activations and logits stay near
    unit scale at any depth, so that an absolute tolerance means something. Variances
    are floored: on the small late maps, four images leave some channels almost
    constant, and dividing by their variance would blow the activations up.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.2)
            norm.reset_running_stats()
            norm.momentum = None  # A cumulative average: after one pass, that batch's statistics.
        model.train()
        model(torch.randn(4, 3, size, size))
        for norm in norms:
            norm.momentum = 0.1
            std = norm.running_var.sqrt()
            norm.running_mean.add_(torch.randn_like(std) * 0.2 * std)
            norm.running_var.mul_(torch.empty_like(std).uniform_(0.7, 1.4)).clamp_(min=0.1)
    model.eval()


def _parameter_count(model: nnx.Module) -> int:
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def vgg16_reference() -> "torch.nn.Module":
    """One random torchvision VGG-16 (138 M parameters) for every VGG test."""
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


# DenseNet-121 and Inception-v3 take longest: nnx.eval_shape is quadratic in the number of
# variables, as flax probes each traced value's `.sharding` and jax builds that error
# message by walking the whole trace (see jax-ml/jax#40041).
SLOW = ("densenet121", "inception_v3")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in REFERENCES]
)
def test_eval_logits_match_torchvision(name, tmp_path, request):
    make, size, cam_shape = REFERENCES[name]
    if name == "vgg16":
        reference = request.getfixturevalue("vgg16_reference")
    else:
        torch.manual_seed(0)
        reference = make()
        _randomize_batch_norm(reference, size)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)

    model = weights.build_pretrained(name, path)
    path.unlink()  # VGG-16's is 0.5 GB.
    model.eval()
    assert _parameter_count(model) == sum(p.numel() for p in reference.parameters())
    x = _images(size)
    logits, features = nnx.jit(lambda m, x: (m(x), m.features(x)))(model, x)
    assert features[model.cam_layers[0]].shape == (BATCH, *cam_shape)
    with torch.no_grad():
        expected = reference(_to_torch(x)).numpy()
    assert np.abs(expected).max() > 0.1  # The comparison is not between near-zeros.
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 7), (14, 14), (9, 13)])
def test_adaptive_average_pool_matches_torch(size):
    """Identity at 7, plain averaging at 14, unequal and overlapping bins elsewhere."""
    x = _images(16)[:, : size[0], : size[1]]
    expected = torch.nn.functional.adaptive_avg_pool2d(_to_torch(x), 7).numpy()
    pooled = vgg.adaptive_average_pool(jnp.asarray(x), 7)
    np.testing.assert_allclose(pooled, expected.transpose(0, 2, 3, 1), atol=1e-6, rtol=0)


def test_vgg16_backbone_import_keeps_fc6_and_fc7(vgg16_reference):
    """Fine-tuning replaces fc8 only: the backbone takes classifier.0 and classifier.3."""
    model = nnx.eval_shape(lambda: models.build("vgg16", 2))
    state_dict = {k: v.numpy() for k, v in vgg16_reference.state_dict().items()}
    weights.load_torch(model, state_dict)
    np.testing.assert_array_equal(
        model.backbone.fc7.kernel[...], state_dict["classifier.3.weight"].T
    )
    assert isinstance(model.fc8.kernel.get_value(), jax.ShapeDtypeStruct)  # Never written.


@pytest.fixture(scope="module")
def vgg16_gap(vgg16_reference) -> nnx.Module:
    """VGG16-GAP with torchvision VGG-16's convolutions and a fresh head, in eval mode."""
    model = models.build("vgg16_gap", 3)
    weights.load_torch(model, {k: v.numpy() for k, v in vgg16_reference.state_dict().items()})
    model.eval()
    return model


def test_vgg16_gap_parameter_count(vgg16_reference):
    model = nnx.eval_shape(lambda: models.build("vgg16_gap", 1000))
    convolutions = sum(p.numel() for p in vgg16_reference.features.parameters())
    cam_conv = 3 * 3 * (512 // 2) * 1024 + 1024  # two groups
    assert _parameter_count(model) == convolutions + cam_conv + 1024 * 1000 + 1000


def test_vgg16_gap_conv5_3_matches_torchvision_before_pool5(vgg16_gap, vgg16_reference):
    x = _images(64)
    features = nnx.jit(lambda m, x: m.features(x))(vgg16_gap, x)
    with torch.no_grad():
        expected = vgg16_reference.features[:-1](_to_torch(x)).numpy()  # all but pool5
    np.testing.assert_allclose(features["conv5_3"], expected.transpose(0, 2, 3, 1), atol=1e-4)


def test_vgg16_gap_cam_is_the_last_conv_map_weighted_by_the_dense_kernel(vgg16_gap):
    """The CAM identity: a logit is the bias plus the spatial mean of its class's CAM."""
    model = vgg16_gap
    assert model.cam_layers == ("cam_conv",)
    logits, features = nnx.jit(lambda m, x: (m(x), m.features(x)))(model, _images(64))
    last_conv = features["cam_conv"]
    assert last_conv.shape == (BATCH, 4, 4, 1024)  # conv5_3's stride 16: no pool5
    cams = jnp.einsum("nhwk,kc->nhwc", last_conv, model.fc.kernel[...])
    assert cams.shape[1:3] == last_conv.shape[1:3]
    np.testing.assert_allclose(
        cams.mean(axis=(1, 2)) + model.fc.bias[...], logits, rtol=1e-5, atol=1e-5
    )
    at_224 = nnx.eval_shape(
        lambda m, x: m.features(x), model, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )
    assert at_224["cam_conv"].shape == (1, 14, 14, 1024)  # the CAM paper's 14x14 maps


def test_vgg16_gap_head_has_no_torchvision_counterpart(vgg16_reference):
    model = nnx.eval_shape(lambda: models.build("vgg16_gap", 1000))
    state_dict = {k: v.numpy() for k, v in vgg16_reference.state_dict().items()}
    with pytest.raises(ValueError, match="cam_conv has no torch counterpart"):
        weights.load_torch(model, state_dict, include_head=True)


@pytest.fixture(scope="module")
def inception_v3() -> nnx.Module:
    return nnx.eval_shape(lambda: models.build("inception_v3", 1000))


def test_inception_v3_skips_the_auxiliary_classifier(inception_v3):
    """torchvision's Inception-v3 checkpoints carry AuxLogits; only the backbone import
    skips them, like the main classifier."""
    model = inception_v3
    state_dict = {k: v.numpy() for k, v in _inception(aux_logits=True).state_dict().items()}
    weights.load_torch(model, state_dict)
    np.testing.assert_array_equal(
        model.backbone.mixed["Mixed_7c"].units["branch3x3_2b"].norm.var[...],
        state_dict["Mixed_7c.branch3x3_2b.bn.running_var"],
    )
    with pytest.raises(ValueError, match="unexpected keys: 'AuxLogits"):
        weights.load_torch(model, state_dict, include_head=True)


def test_inception_v3_rejects_images_below_75_px(inception_v3):
    with pytest.raises(ValueError, match="at least 75 px"):
        nnx.eval_shape(
            lambda m, x: m(x), inception_v3, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
        )
