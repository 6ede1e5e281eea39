"""Shared fixtures. No test touches the network: urlopen is replaced by one that refuses."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="session", autouse=True)
def session_cache_home(tmp_path_factory):
    """The session's fixtures cache decoded image folders under a temporary folder, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(autouse=True)
def cache_home(monkeypatch, tmp_path_factory):
    """Each test caches decoded image folders in a temporary folder of its own, beside its tmp_path rather than in
    it (a test's images are often tmp_path itself, and nothing is cached inside an image folder). Returns the
    folder the cache files go into (config.user_cache_dir)."""
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "resnetlab"


@pytest.fixture(autouse=True)
def no_system_data(monkeypatch):
    """Tests see only the system copies they install themselves (RESNETLAB_SYSTEM_DATA)."""
    import resnetlab.data

    monkeypatch.setattr(resnetlab.data, "SYSTEM_DATA_DIRS", [])
    monkeypatch.delenv("RESNETLAB_SYSTEM_DATA", raising=False)


@pytest.fixture
def skip_md5(monkeypatch):
    """The tiny files the tests write cannot match torchvision's md5 sums: check only that they exist."""
    import torchvision.datasets.cifar
    import torchvision.datasets.stl10
    import torchvision.datasets.svhn

    def exists(fpath, md5=None):
        return Path(fpath).is_file()

    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", exists)


@pytest.fixture
def tiny_fashion(tmp_path):
    """A tiny Fashion-MNIST in torchvision's layout; returns the data dir."""
    from fakedata import write_mnist_like

    root = tmp_path / "data"
    write_mnist_like(root, "FashionMNIST", n_train=300, n_test=100)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the tests that need a checkpoint."""
    from fakedata import write_mnist_like

    from resnetlab.cli import main

    base = tmp_path_factory.mktemp("run")
    write_mnist_like(base / "data", "FashionMNIST", n_train=300, n_test=100)
    out = base / "out"
    args = [
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(base / "data"),
        "--model",
        "resnet20",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    return out
