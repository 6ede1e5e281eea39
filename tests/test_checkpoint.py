import pickle

import pytest
import torch

from resnetlab.card import ModelCard
from resnetlab.checkpoint import Checkpoint, read_checkpoint, save_atomic
from resnetlab.errors import UserError
from resnetlab.models import create_model


class _RunsACommand:
    """A pickle payload: unpickling it calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_whose_pickle_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "resnetlab-checkpoint", "state_dict": {}, "payload": _RunsACommand(marker)}, evil)
    # The payload is real: a plain unpickle does run it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_RunsACommand(probe)))
    assert probe.exists()
    with pytest.raises(UserError, match="could run code"):
        read_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,expected",
    [(b"", "empty"), (b"hello, not a checkpoint", "not a readable checkpoint")],
)
def test_foreign_or_empty_files_get_one_clear_sentence(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected):
        read_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_atomic({"format": "resnetlab-checkpoint", "w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(UserError, match="truncated"):
        read_checkpoint(path)


def test_pytorch_file_that_is_not_ours(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="not a resnetlab checkpoint"):
        read_checkpoint(path)


def test_save_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "best.pt"
    save_atomic({"format": "resnetlab-checkpoint", "x": torch.ones(3)}, path)
    save_atomic({"format": "resnetlab-checkpoint", "x": torch.zeros(3)}, path)
    assert torch.equal(read_checkpoint(path)["x"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_atomic({"format": "resnetlab-checkpoint", "x": torch.ones(3)}, path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_atomic({"format": "resnetlab-checkpoint", "x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


@pytest.mark.parametrize(
    "name,options",
    [
        ("resnet8w", {}),
        ("resnet20", {}),
        ("resnet18", {"stem": "imagenet"}),
        ("resnet18", {"stem": "strided", "shortcut": "A"}),
    ],
)
def test_a_described_model_is_rebuilt_exactly(name, options):
    """The stem and shortcut are part of the description: a net rebuilt with another stem would load the same
    weights and compute something else."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, **options).eval()
    card = ModelCard(name, tuple("abcdefghij"), 1, 64, (0.5,), (0.25,), shortcut=model.shortcut, stem=model.stem)
    saved = Checkpoint(card, model.state_dict()).to_dict()
    rebuilt = Checkpoint.from_dict(saved, "test").build_model()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
