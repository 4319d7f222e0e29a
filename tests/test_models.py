"""Models: shapes, the trunk/head split, first-conv adaptation and pretrained-weight loading."""

from __future__ import annotations

import pytest
import torch
import torchvision

from activelab.errors import ConfigError, DatasetNotFoundError
from activelab.models import build_model, check_model
from activelab.models.surgery import adapt_first_conv


@pytest.mark.parametrize("name, shape", [("cnn", (1, 28, 28)), ("cnn", (3, 8, 8)), ("resnet18", (11, 65, 65)),
                                         ("resnet50", (1, 32, 32))])
def test_logits_and_embedding_shapes(name, shape):
    model = build_model(name, shape, 7).eval()
    images = torch.randn(2, *shape)
    hidden, logits = model.head.forward_parts(model.trunk(images))
    assert logits.shape == (2, 7)
    assert hidden.shape == (2, model.head.embedding_dim)
    assert torch.allclose(model(images), logits)


def test_cnn_is_the_gal_architecture():
    model = build_model("cnn", (1, 28, 28), 10)
    convolutions = [layer for layer in model.trunk if isinstance(layer, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convolutions] == [(32, (4, 4)), (32, (4, 4))]
    assert model.head.input_dropout.p == 0.25 and model.head.hidden_dropout.p == 0.5
    assert model.head.embedding_dim == 128


def test_adapted_first_conv_matches_the_original_on_replicated_channels():
    torch.manual_seed(0)
    original = torchvision.models.resnet18(weights=None).conv1
    for channels in (1, 2, 11):
        adapted = adapt_first_conv(original, channels)
        single = torch.randn(2, 1, 32, 32)
        expected = original(single.repeat(1, 3, 1, 1))
        assert torch.allclose(adapted(single.repeat(1, channels, 1, 1)), expected, atol=1e-5)


def test_pretrained_weights_from_a_file_are_loaded_and_adapted(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", (1, 32, 32), 5, weights=path).eval()
    assert torch.equal(model.trunk.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    gray = torch.randn(2, 1, 32, 32)
    reference.fc = torch.nn.Identity()
    assert torch.allclose(model.trunk(gray), reference(gray.repeat(1, 3, 1, 1)), atol=1e-4)


def test_missing_pretrained_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="resnet50-11ad3fa6.pth there or pass --weights"):
        build_model("resnet50", (3, 32, 32), 5, pretrained=True)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_model("resnet50", (3, 32, 32), 5, weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    with pytest.raises(ConfigError, match="not a readable PyTorch weights file"):
        build_model("resnet18", (3, 32, 32), 5, weights=tmp_path / "junk.pth")


def test_unknown_model_and_bad_inputs():
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="at least 8x8"):
        build_model("cnn", (1, 4, 4), 10)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build_model("cnn", (1, 28, 28), 10, pretrained=True)


def test_adapted_first_conv_keeps_every_setting_and_refuses_grouped_convolutions():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2, padding_mode="reflect")
    adapted = adapt_first_conv(conv, 1)
    assert (adapted.stride, adapted.padding, adapted.dilation, adapted.padding_mode) == ((2, 2), (2, 2), (2, 2), "reflect")
    gray = torch.randn(1, 1, 9, 9)
    assert torch.allclose(adapted(gray), conv(gray.repeat(1, 3, 1, 1)), atol=1e-5)
    with pytest.raises(ConfigError, match="grouped"):
        adapt_first_conv(torch.nn.Conv2d(3, 3, 3, groups=3), 1)


def test_missing_cached_weights_are_found_by_check_model_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="resnet18-f37072fd.pth there"):
        check_model("resnet18", (1, 28, 28), pretrained=True)
