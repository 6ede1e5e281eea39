import pytest
import torch
import torch.nn.functional as F
from fakedata import pattern_images
from PIL import Image

from resnetlab.cli import main
from resnetlab.explain import grad_cam
from resnetlab.models import BasicBlock, ResNet, create_model

# A planted feature that decides the class: a bright object at a random place on a noisy background, whose
# shape is the class (a square, a horizontal bar, a vertical bar).
SHAPES = [(6, 6), (2, 10), (10, 2)]


def planted_shapes(n: int, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [n, 1, size, size], labels [n], and a mask of each object with a 2-pixel margin [n, size, size]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.4
    y = torch.arange(n) % len(SHAPES)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        h, w = SHAPES[int(y[i])]
        top = int(torch.randint(0, size - h + 1, (1,), generator=g))
        left = int(torch.randint(0, size - w + 1, (1,), generator=g))
        x[i, :, top : top + h, left : left + w] = 1.0
        masks[i, max(0, top - 2) : top + h + 2, max(0, left - 2) : left + w + 2] = True
    return x, y, masks


def test_grad_cam_map_has_the_image_size_and_leaves_no_hook():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    x = torch.randn(3, 1, 20, 21)
    layer = model.stages()[-1]
    maps, logits = grad_cam(model, x, layer)
    assert maps.shape == (3, 20, 21) and logits.shape == (3, 10)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert not layer._forward_hooks
    # Explaining another class gives another map.
    other = (logits.argmax(1) + 1) % 10
    other_maps, _ = grad_cam(model, x, layer, target=other)
    assert not torch.allclose(maps, other_maps)


def test_grad_cam_equals_captums_layer_grad_cam():
    """A cross-check against Captum's LayerGradCam, where Captum is installed (it is not a dependency)."""
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3).eval()
    x = torch.randn(4, 3, 32, 32)
    maps, logits = grad_cam(model, x, model.layer3)
    theirs = captum_attr.LayerGradCam(model, model.layer3).attribute(x, target=logits.argmax(1), relu_attributions=True)
    theirs = captum_attr.LayerAttribution.interpolate(theirs, (32, 32), interpolate_mode="bilinear")[:, 0]
    theirs = theirs / theirs.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    torch.testing.assert_close(maps, theirs)


def test_grad_cam_highlights_the_feature_that_decides_the_class():
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1], [8, 16, 32], num_classes=len(SHAPES), in_channels=1)
    x, y, _ = planted_shapes(512)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(50):
        i = torch.randint(0, len(x), (32,))
        loss = F.cross_entropy(model(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y, masks = planted_shapes(60, seed=1)
    maps, logits = grad_cam(model, x, model.stages()[-1])
    assert (logits.argmax(1) == y).float().mean() >= 0.9
    on_object = (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)
    area = masks.flatten(1).float().mean(1)  # about 14% of the image
    # Spread evenly, the map would put `area` of its mass on the object; it puts about 4 times that there.
    assert on_object.mean() > 2.5 * area.mean()
    assert (on_object > 2 * area).float().mean() >= 0.8


def test_explain_draws_a_grid_for_test_indices_and_files(trained_run, tmp_path, capsys):
    image = tmp_path / "coat.png"
    Image.fromarray(pattern_images(torch.tensor([4]).numpy(), 28, 1)[0, :, :, 0]).save(image)
    picture = tmp_path / "cam.png"
    assert main(["explain", str(trained_run / "best.pt"), "0", "7", str(image), "--out", str(picture)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('test image 0: predicted "') and ', actual "' in lines[0]
    assert lines[1].startswith("test image 7: ")
    assert lines[2].startswith('coat.png: predicted "') and "actual" not in lines[2]
    assert lines[3] == f"picture: {picture}"
    with Image.open(picture) as grid:
        assert grid.size[0] > 200 and grid.size[1] > 200


def test_explain_an_earlier_stage_and_the_default_picture(trained_run, capsys):
    assert main(["explain", str(trained_run), "3", "--stage", "2"]) == 0
    assert (trained_run / "gradcam.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [(["100"], "test image 100 does not exist"), (["1", "--stage", "4"], "--stage must be between 1 and 3")],
)
def test_explain_mistakes_are_one_sentence(trained_run, capsys, args, message):
    assert main(["explain", str(trained_run / "best.pt"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
