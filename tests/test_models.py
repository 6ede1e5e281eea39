import re

import pytest
import torch
import torchvision
from torch import nn

from resnetlab import models
from resnetlab.card import ModelCard
from resnetlab.errors import UserError
from resnetlab.models import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ZeroPadShortcut,
    block_3x3_layers,
    count_parameters,
    create_model,
    fold_batchnorm,
    list_models,
    model_spec,
    pretrained_models,
    register_model,
)

# He et al. 2015, Table 6: parameters of the CIFAR-10 nets (10 classes, RGB input).
PAPER_PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6}


@pytest.mark.parametrize("name,expected", PAPER_PARAMS.items())
def test_cifar_nets_match_the_papers_parameter_counts(name, expected):
    params = count_parameters(create_model(name, num_classes=10, in_channels=3))
    assert round(params / 1e6, 2 if expected < 1e6 else 1) == round(expected / 1e6, 2 if expected < 1e6 else 1)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_imagenet_stem_loads_torchvision_weights_strictly(name):
    reference = getattr(torchvision.models, name)(num_classes=1000)
    model = create_model(name, num_classes=1000, in_channels=3, stem="imagenet")
    model.load_state_dict(reference.state_dict(), strict=True)
    model.eval(), reference.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_every_model_and_shortcut_runs_forward_and_backward(name, shortcut):
    model = create_model(name, num_classes=7, in_channels=1, shortcut=shortcut)
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if name == "resnet9w":  # the whitening stem and BN's scales stay fixed
        assert "conv1.weight" in frozen and all(n == "conv1.weight" or ".bn" in n for n in frozen)
    else:
        assert not frozen


def test_three_channel_input_and_many_classes():
    model = create_model("resnet20", num_classes=100, in_channels=3)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 100)


def test_option_a_shortcut_has_no_parameters_and_option_b_projects():
    a = create_model("resnet20", shortcut="A")
    b = create_model("resnet20", shortcut="B")
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert count_parameters(a.layer2[0].downsample) == 0
    conv = b.layer2[0].downsample[0]
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert count_parameters(b) > count_parameters(a)


def test_zero_pad_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 4, 8, 8)
    y = ZeroPadShortcut(4, 10, stride=2)(x)
    assert y.shape == (2, 10, 4, 4)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert (y[:, 4:] == 0).all()


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_block_computes_residual_plus_identity(block):
    """H(x) = ReLU(F(x) + x): with F(x) forced to zero the block passes x through."""
    planes = 4
    channels = planes * block.expansion
    b = block(channels, planes).eval()
    x = torch.rand(2, channels, 6, 6)  # non-negative, so ReLU(x) == x
    last_bn = b.bn3 if block is Bottleneck else b.bn2
    with torch.no_grad():
        residual = b(x) - x  # == F(x) where F(x) + x >= 0
        last_bn.weight.zero_()
        last_bn.bias.zero_()
        torch.testing.assert_close(b(x), x)
    assert residual.abs().sum() > 0


def test_plain_nets_have_no_shortcuts_and_differ_from_residual_ones():
    plain = create_model("plain20")
    assert not any(isinstance(m, ZeroPadShortcut) for m in plain.modules())
    assert all(m.downsample is None and not m.residual for m in plain.modules() if isinstance(m, BasicBlock))
    residual = create_model("resnet20")
    residual.load_state_dict(plain.state_dict())  # same weights, option A adds none
    residual.eval(), plain.eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain(x), residual(x))


def test_small_stem_is_default_for_small_images_and_imagenet_stem_for_large():
    assert isinstance(create_model("resnet18", image_size=32).maxpool, torch.nn.Identity)
    assert create_model("resnet18", image_size=32).conv1.kernel_size == (3, 3)
    big = create_model("resnet18", image_size=96)
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, torch.nn.MaxPool2d)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="resnet20"):
        create_model("resnet7")


def test_bf16_autocast_matches_fp32():
    """Guards against a wrong-result bf16 kernel (strided convolutions included)."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
        cl = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_cl = cl(x.contiguous(memory_format=torch.channels_last)).float()
    for out in (low, low_cl):
        assert (out.argmax(1) == reference.argmax(1)).float().mean() >= 0.75
        assert (out - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


def test_compact_net_halves_the_resolution_in_its_stem_and_has_three_stages():
    model = create_model("resnet8w", num_classes=10, in_channels=1).eval()
    assert model.conv1.stride == (2, 2)
    shapes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for stage in model.stages()]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert shapes == [(2, 48, 14, 14), (2, 96, 7, 7), (2, 192, 4, 4)]
    weighted = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    projections = [m for m in weighted if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(weighted) - len(projections) == 8  # resnet8w: 8 weighted layers on the main path


def test_resnet9_opens_stages_with_conv_and_pool_and_keeps_identity_shortcuts():
    model = create_model("resnet9", num_classes=10, in_channels=3).eval()
    shapes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for stage in model.stages()]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert model.conv1.out_channels == 32 and model.conv1.stride == (1, 1)
    assert shapes == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 2 and all(b.downsample is None for b in blocks)  # F(x) and x always have one shape
    weighted = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 9 and all(m.kernel_size == (3, 3) for m in weighted[:-1])
    # Page's head: max over positions, logits scaled by 1/8
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    expected = model.fc(features.amax(dim=(2, 3))) / 8
    torch.testing.assert_close(model.forward_head(features), expected)


@pytest.mark.parametrize("name", ["resnet8w", "resnet9", "resnet9w", "resnet20", "resnet50"])
def test_folding_batchnorm_keeps_the_outputs_and_removes_every_bn(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, shortcut="B")
    model.train()
    with torch.no_grad():
        for _ in range(3):  # give the BN layers running statistics that are not the identity
            model(torch.randn(16, 1, 28, 28) * 3 + 1)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_resnet9w_whitening_stem_decorrelates_the_patches_of_the_images_it_was_set_from():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(100, 3, 8, 8), size=16, mode="bilinear")
    images = (
        smooth * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
        + smooth.mean(1, keepdim=True)
        + 0.1 * torch.randn(100, 3, 16, 16)
    )
    model = create_model("resnet9w")
    model.init_whitening(images)
    with torch.no_grad():
        out = model.conv1(images)
    assert out.shape[1] == 24 and not model.conv1.weight.requires_grad
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(half.T @ half / len(half), torch.eye(12), atol=0.05, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])  # the negatives, so the GELU after it keeps both signs
    raw = images[:, :, :2, :2].reshape(100, 12)  # without the stem the same patches are far from decorrelated
    assert (raw.T @ raw / 100 - torch.eye(12)).abs().max() > 1
    with pytest.raises(ValueError, match="whitening"):
        create_model("resnet9").init_whitening(images)


def test_resnet9w_starts_each_3x3_conv_as_the_identity_and_trains_only_bn_biases():
    model = create_model("resnet9w")
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.layer1[1].conv1(x), x)  # Dirac init
        torch.testing.assert_close(model.layer2[0].conv(x)[:, :64], x)  # the first in_channels of 256 filters
        assert model.layer2[0].conv(x)[:, 64:].abs().sum() > 0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 7 and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    with pytest.raises(ValueError, match="16 pixels"):
        create_model("resnet9w", image_size=12)


# Every registered model, timm-style: what it declares is what it builds, and the parts that read the declarations
# (folding BN, the 3x3 layers, the card, the data-dependent set-up) cover it whole. Where only the structure matters
# the nets are built on the meta device: no memory, no initialization, shapes still checked.


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_what_it_declares_with_each_of_its_stems(name):
    spec = model_spec(name)
    for stem in spec.stems:
        with torch.device("meta"):
            model = create_model(name, num_classes=5, in_channels=3, stem=stem, image_size=32)
            out = model(torch.empty(2, 3, 32, 32))
        assert out.shape == (2, 5)
        assert (model.stem, model.shortcut, model.residual) == (stem, spec.shortcut, spec.residual)
        blocks = [[m for m in stage if isinstance(m, spec.block)] for stage in model.stages()]
        assert [len(b) for b in blocks] == list(spec.layers)
        widths = [
            b[0].bn1.num_features if b else stage[0].conv.out_channels for b, stage in zip(blocks, model.stages())
        ]
        assert widths == list(spec.widths)
    assert (name in pretrained_models()) == bool(spec.imagenet_weights)


@pytest.mark.parametrize("name", list_models())
def test_every_models_folded_copy_equals_it_in_eval_mode_with_no_bn_left(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=3)
    with torch.no_grad():
        for m in model.modules():  # running statistics and BN biases that are not the identity
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list_models())
def test_the_3x3_layers_are_every_3x3_convolution_of_the_stages_each_with_the_bn_after_it(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=4, in_channels=3)
    in_stages = [
        f"layer{i + 1}.{n}"
        for i, stage in enumerate(model.stages())
        for n, m in stage.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    layers = block_3x3_layers(model)
    assert [n for n, _, _ in layers] == in_stages and in_stages
    assert all(isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels for _, conv, bn in layers)


class _Undeclared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x))


class _ForgetsABn(_Undeclared):
    def __init__(self) -> None:
        super().__init__()
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def conv_bn_pairs(self):
        return (("conv", "bn"),)


@pytest.mark.parametrize("block", [_Undeclared, _ForgetsABn])
def test_a_block_that_does_not_declare_each_of_its_conv_bn_pairs_is_an_error_not_skipped(block):
    model = create_model("resnet20")
    model.layer1[0] = block()
    with pytest.raises(TypeError, match="conv_bn_pairs"):
        fold_batchnorm(model)
    with pytest.raises(TypeError, match="conv_bn_pairs"):
        block_3x3_layers(model)


@pytest.mark.parametrize("name", list_models())
def test_only_the_whitening_stem_asks_for_training_images_before_training(name):
    whitened = model_spec(name).stems[0] == "whiten"
    with torch.device("cpu" if whitened else "meta"):
        model, asked = create_model(name, num_classes=3, in_channels=3), []
    before = model.conv1.weight.detach().clone()
    model.prepare(lambda: asked.append(1) or torch.randn(64, 3, 8, 8))
    assert asked == ([1] if whitened else [])
    if whitened:
        assert not torch.equal(model.conv1.weight, before)


@pytest.mark.parametrize("name", list_models())
def test_every_models_card_records_all_its_options_and_rebuilds_it(name):
    spec = model_spec(name)
    card = ModelCard(name, ("a", "b"), 3, 32, (0.5,) * 3, (0.25,) * 3, shortcut="B", stem=spec.stems[-1])
    options = card.to_dict()["model"]["options"]
    assert options == {"shortcut": "B", "stem": spec.stems[-1], **spec.fixed_options()}
    assert {"block", "layers", "widths", "residual"} <= set(options) and set(spec.options) <= set(options)
    read = ModelCard.from_dict(card.to_dict(), "test")
    assert read == card
    with torch.device("meta"):
        rebuilt, built = read.build_model(), create_model(name, 2, 3, shortcut="B", stem=spec.stems[-1], image_size=32)
    assert str(rebuilt) == str(built)


def test_an_older_card_without_the_options_reads_as_the_models_defaults_and_a_foreign_one_is_refused():
    card = ModelCard("resnet9", ("a", "b"), 3, 32, (0.5,) * 3, (0.25,) * 3)
    old = card.to_dict()
    old["model"]["options"] = {"shortcut": None}  # as the first cards were written
    assert ModelCard.from_dict(old, "old.pt") == card
    for option, value, says in (
        ("widths", [64, 128, 512], "but resnet9 has [64, 128, 256]"),
        ("stem", "imagenet", "not one of small"),
        ("dropout", 0.5, "not an option of resnet9"),
    ):
        crafted = card.to_dict()
        crafted["model"]["options"][option] = value
        with pytest.raises(UserError, match=re.escape(f"model.options.{option} ") + ".*" + re.escape(says)):
            ModelCard.from_dict(crafted, "crafted.pt")


def add_tiny_model(monkeypatch, name: str = "resnet6t"):
    """The worked example of docs/architecture.md, registered until the test ends: a model is one registered
    builder. Returns the builder."""
    monkeypatch.setattr(models, "_MODELS", dict(models._MODELS))

    @register_model(
        "tiny",
        {name: (BasicBlock, [1, 1])},
        widths=(8, 16),
        shortcut="B",
        stems=("small",),
        description="a tiny test net",
    )
    def tiny_resnet(spec, **options) -> ResNet:
        return models._resnet(spec, **options)

    return tiny_resnet


def test_a_model_added_to_the_registry_is_listed_built_and_recorded(monkeypatch):
    tiny_resnet = add_tiny_model(monkeypatch)
    assert "resnet6t" in list_models() and models.model_summary("resnet6t").endswith("a tiny test net")
    model = create_model("resnet6t", num_classes=3, in_channels=1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3) and model.layer2[0].bn2.num_features == 16
    card = ModelCard("resnet6t", ("a", "b", "c"), 1, 8, (0.5,), (0.25,))
    assert card.to_dict()["model"]["options"]["widths"] == [8, 16]
    with pytest.raises(ValueError, match="registered twice"):
        register_model(
            "tiny",
            {"resnet6t": (BasicBlock, [1, 1])},
            widths=(8, 16),
            shortcut="B",
            stems=("small",),
            description="again",
        )(tiny_resnet)
