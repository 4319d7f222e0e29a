"""Networks by name from timm and torchvision: shapes, the trunk/head split under MC dropout, weights, names."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from activelab.data.base import ArrayDataset
from activelab.errors import ConfigError, DatasetNotFoundError
from activelab.inference import pool_outputs
from activelab.models import MODELS, DropoutHead, build_model, check_model
from activelab.models.surgery import first_conv
from activelab.models.torchvision_backbones import weight_files

timm = pytest.importorskip("timm")

NETWORKS = [("timm:resnet10t", (1, 32, 32)), ("timm:mobilenetv3_small_050", (3, 32, 32)),
            ("torchvision:mobilenet_v3_small", (1, 32, 32)), ("torchvision:resnet34", (3, 32, 32))]


def tiny_dataset(shape, n=7):
    rng = np.random.default_rng(0)
    return ArrayDataset("toy", rng.random((n, *shape)).astype(np.float32), rng.integers(0, 4, n),
                        ("a", "b", "c", "d"))


@pytest.mark.parametrize("name, shape", NETWORKS)
def test_named_networks_get_the_dropout_head_and_the_images_channels(name, shape):
    torch.manual_seed(0)
    assert check_model(name, shape) == name
    model = build_model(name, shape, 4).eval()
    images = torch.randn(3, *shape)
    features = model.trunk(images)
    hidden, logits = model.head.forward_parts(features)
    assert logits.shape == (3, 4) and hidden.shape == (3, 512)
    assert torch.allclose(model(images), logits)
    assert isinstance(model.head, DropoutHead) and model.head.hidden_dropout.p == 0.5
    assert isinstance(model.head.hidden[1], nn.BatchNorm1d)
    assert model.head.hidden[0].in_features == features[0].numel()
    assert first_conv(model.trunk)[1].in_channels == shape[0]
    # the backbone's ImageNet classifier is gone: no layer of the trunk produces 1000 outputs
    assert not any(getattr(layer, "out_features", None) == 1000 for layer in model.trunk.modules())


@pytest.mark.parametrize("name, shape", NETWORKS[::2])
def test_mc_dropout_runs_the_trunk_once_and_the_head_passes_stacked(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 4)
    dataset = tiny_dataset(shape)
    calls = {"trunk": 0, "head": 0}
    model.trunk.register_forward_hook(lambda *_: calls.__setitem__("trunk", calls["trunk"] + 1))
    model.head.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    positions = np.array([0, 3, 6, 2, 5])
    out = pool_outputs(model, dataset, positions, {"probs_T_N_C", "probs_N_C"}, mc_samples=3, batch_size=2, seed=1)
    assert out["probs_T_N_C"].shape == (3, 5, 4) and out["probs_N_C"].shape == (5, 4)
    np.testing.assert_allclose(out["probs_T_N_C"].sum(-1), 1.0, atol=1e-5)
    assert calls["trunk"] == 3  # three batches, the trunk once per batch
    # the T passes of activelab's head run stacked from its weights (one batched product, no module call);
    # forward_parts gives the deterministic output
    assert calls["head"] == 0
    assert not np.allclose(out["probs_T_N_C"][0], out["probs_T_N_C"][1])
    again = pool_outputs(model, dataset, positions, {"probs_T_N_C"}, mc_samples=3, batch_size=5, seed=1)
    np.testing.assert_allclose(again["probs_T_N_C"], out["probs_T_N_C"], atol=1e-5)


def test_torchvision_weights_from_a_file_are_loaded_and_adapted_to_one_channel(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v3_small().eval()
    path = tmp_path / "mobilenet.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("torchvision:mobilenet_v3_small", (1, 32, 32), 3, weights=path).eval()
    assert torch.equal(model.trunk.features[5].block[0][0].weight, reference.features[5].block[0][0].weight)
    reference.classifier[3] = nn.Identity()
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.trunk(gray), reference(gray.repeat(1, 3, 1, 1)), atol=1e-4)
    # a file saved from the adapted network itself (one input channel, no classifier) loads as well
    torch.save(model.trunk.state_dict(), tmp_path / "own.pth")
    again = build_model("torchvision:mobilenet_v3_small", (1, 32, 32), 3, weights=tmp_path / "own.pth").eval()
    with torch.no_grad():
        assert torch.equal(again.trunk(gray), model.trunk(gray))


def test_torchvision_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    file = weight_files("mobilenet_v3_small")[0]
    with pytest.raises(DatasetNotFoundError, match=f"put torchvision's {file} there or pass --weights PATH"):
        check_model("torchvision:mobilenet_v3_small", (3, 32, 32), pretrained=True)
    torch.manual_seed(2)
    reference = torchvision.models.mobilenet_v3_small()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / file)
    model = build_model("torchvision:mobilenet_v3_small", (3, 32, 32), 3, pretrained=True)
    assert torch.equal(model.trunk.features[0][0].weight, reference.features[0][0].weight)


def test_timm_weights_from_a_file_are_loaded_with_timm_adapting_the_channels(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("resnet10t").eval()
    path = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("timm:resnet10t", (1, 32, 32), 3, weights=path).eval()
    assert torch.equal(model.trunk.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    reference.reset_classifier(0)
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.trunk(gray), reference(gray.repeat(1, 3, 1, 1)), atol=1e-4)
    assert "state_dict" not in model.trunk.pretrained_cfg  # no second copy of the weights kept
    # safetensors, and a file without the classifier, work too
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(tmp_path / "features.safetensors"))
    again = build_model("timm:resnet10t", (1, 32, 32), 3, weights=tmp_path / "features.safetensors").eval()
    with torch.no_grad():
        assert torch.allclose(again.trunk(gray), model.trunk(gray), atol=1e-6)


def test_timm_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="pass --weights PATH to a state dict file"):
        check_model("timm:resnet10t", (3, 32, 32), pretrained=True)
    torch.manual_seed(4)
    reference = timm.create_model("resnet10t")
    repository = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repository / "refs").mkdir(parents=True)
    (repository / "refs" / "main").write_text("0123abcd")
    (repository / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(reference.state_dict(), str(repository / "snapshots" / "0123abcd" / "model.safetensors"))
    model = build_model("timm:resnet10t", (3, 32, 32), 3, pretrained=True)
    assert torch.equal(model.trunk.conv1[0].weight, reference.conv1[0].weight)


def test_weights_of_another_network_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ConfigError, match=r"does not hold torchvision:resnet34 weights \(.* missing, e.g. layer1.2"):
        build_model("torchvision:resnet34", (3, 32, 32), 3, weights=tmp_path / "resnet18.pth")
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(ConfigError, match="does not hold timm:resnet10t weights"):
        build_model("timm:resnet10t", (3, 32, 32), 3, weights=tmp_path / "mobilenet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    with pytest.raises(ConfigError, match="not a readable PyTorch weights file"):
        build_model("timm:resnet10t", (3, 32, 32), 3, weights=tmp_path / "junk.pth")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        check_model("torchvision:resnet34", (3, 32, 32), weights=tmp_path / "nope.pth")


@pytest.mark.parametrize("name, message", [
    ("timm:convnxt_tiny", "unknown timm model 'convnxt_tiny'; did you mean timm:convnext_tiny?"),
    ("timm:resnet10t.in22k", "timm has no weights tagged 'in22k' for resnet10t; did you mean timm:resnet10t.c3_in1k?"),
    ("torchvision:resnet33", "unknown torchvision model 'resnet33'; did you mean torchvision:resnet34?"),
    ("torchvision:mobilenet_v3_smal", "did you mean torchvision:mobilenet_v3_small?"),
    ("resnet34", "unknown model 'resnet34'; did you mean torchvision:resnet34?"),
    ("resnt18", "unknown model 'resnt18'; did you mean resnet18?"),
    ("pytorch:resnet34", "unknown model source 'pytorch' in 'pytorch:resnet34'; write timm:NAME or torchvision:NAME."),
    ("timm:", "names no network after 'timm:'"),
    ("qqq", "unknown model 'qqq'; choose one of: cnn, resnet18, resnet50, torchvision:NAME, timm:NAME."),
])
def test_unknown_names_get_the_closest_name(name, message):
    with pytest.raises(ConfigError) as error:
        check_model(name, (3, 32, 32))
    assert message in str(error.value)
    assert str(error.value).count(". ") == 0  # one sentence


def test_images_a_network_cannot_take_are_refused_before_building():
    with pytest.raises(ConfigError, match=r"torchvision:vit_b_16 cannot take images of shape 3x32x32 \(Wrong image"):
        check_model("torchvision:vit_b_16", (3, 32, 32))
    with pytest.raises(ConfigError, match="torchvision:inception_v3 cannot take images of shape 1x28x28"):
        check_model("torchvision:inception_v3", (1, 28, 28))


def test_timm_networks_with_a_fixed_input_size_are_made_for_the_images():
    model = build_model("timm:test_vit", (1, 32, 32), 3).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_a_missing_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when timm is not installed
    with pytest.raises(ConfigError, match=r"timm:resnet10t needs the timm package; install it with "
                                          r"pip install 'activelab\[models\]'\."):
        check_model("timm:resnet10t")


def test_models_lists_the_named_forms():
    assert {"cnn", "resnet18", "resnet50", "timm:NAME", "torchvision:NAME"} <= set(MODELS)
    assert check_model("TorchVision:ResNet34") == "torchvision:resnet34"
    assert check_model("resnet18", (1, 32, 32)) == "resnet18"
