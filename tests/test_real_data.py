"""Real Fashion-MNIST, from Debian's dataset-fashion-mnist (installed by `make test`).

Tiny synthetic data cannot catch a slip that only makes training worse: a label off by one, images not
scaled or normalized the way the model was trained, a test split preprocessed differently from the train
split. Real data trained briefly can: it must clear an accuracy floor (see FLOOR).
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.config import TrainConfig
from resnetlab.engine import train
from resnetlab.inference import TorchPredictor

SYSTEM_COPY = Path("/usr/share/datasets/fashion-mnist")

# resnet20 trained on 4,000 random training images for 2 epochs reached 83-85% on 2,000 test images in our
# runs (see the resolution note of issue 2). Chance is 10%; shuffled labels stay near 10%; a train/test
# preprocessing mismatch or unnormalized test images fall far below 70%. 75% leaves room for noise between
# machines and thread counts while failing every one of those bugs.
FLOOR = 0.75


@pytest.fixture
def system_fashion_mnist(monkeypatch):
    if not SYSTEM_COPY.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (make test does)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    import resnetlab.data

    monkeypatch.setattr(resnetlab.data, "SYSTEM_DATA_DIRS", [str(SYSTEM_COPY.parent)])


def test_real_fashion_mnist_trains_above_the_floor(system_fashion_mnist, tmp_path):
    config = TrainConfig(
        dataset="fashion-mnist",
        data_dir=str(tmp_path / "data"),
        model="resnet20",
        epochs=2,
        batch_size=32,
        subset=4000,
        test_subset=2000,
        out=str(tmp_path / "run"),
        quiet=True,
        precision="fp32",
    )
    summary = train(config)
    assert summary["best_test_accuracy"] >= FLOOR, summary

    # The same test images, saved as PNG files and predicted through the image-file path, get the same
    # probabilities as through the dataset path: both preprocess alike.
    predictor = TorchPredictor.from_checkpoint(tmp_path / "run" / "best.pt", device="cpu", precision="fp32")
    data = predictor.load_test_data(limit=8)
    from_dataset, labels = predictor.probabilities(data.images), data.labels
    paths = []
    for i, image in enumerate(data.images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image[0].numpy()).save(paths[-1])
    from_files = predictor.probabilities(predictor.decode_files(paths))
    torch.testing.assert_close(from_files, from_dataset, atol=1e-5, rtol=1e-4)
    assert np.array_equal(labels.numpy(), [9, 2, 1, 1, 6, 1, 4, 6])  # the real first test labels
