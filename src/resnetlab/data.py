"""Datasets: torchvision's loaders, system copies found offline, image folders, and in-memory batching.

Every dataset is loaded once into memory as a uint8 tensor of shape [N, C, H, W]; batches are converted to
float, augmented and normalized a whole batch at a time. For datasets of this size that is much faster on a
CPU than per-image PIL transforms in a DataLoader, and it keeps the training loop free of worker processes.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from .errors import UserError

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageData",
    "TensorBatches",
    "dataset_names",
    "find_data",
    "get_spec",
    "load_split",
    "normalize",
]

# Folders searched for copies of the data installed system-wide (Debian's dataset-fashion-mnist puts its
# files in /usr/share/datasets/fashion-mnist). RESNETLAB_SYSTEM_DATA adds folders, os.pathsep-separated.
SYSTEM_DATA_DIRS = ["/usr/share/datasets", "/usr/local/share/datasets"]

_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
_DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DatasetSpec:
    """What resnetlab knows about a dataset before loading it."""

    name: str
    torchvision_class: str  # the class in torchvision.datasets that loads it; "" for folders
    channels: int
    image_size: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_model: str
    hflip: bool  # whether a horizontally mirrored image is still an image of the same class
    crop_padding: int  # random-translation augmentation, in pixels
    files: tuple[str, ...]  # the files torchvision needs, relative to --data-dir
    url: str = ""

    @property
    def is_idx(self) -> bool:
        """Stored as IDX files, as the MNIST family is."""
        return self.torchvision_class in ("MNIST", "KMNIST", "FashionMNIST")

    @property
    def system_names(self) -> tuple[str, ...]:
        return (self.name, self.torchvision_class, self.torchvision_class.lower())


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "mnist", "MNIST", 1, 28, _DIGITS, (0.1307,), (0.3081,), "resnet8w", False, 2,
            tuple(f"MNIST/raw/{f}" for f in _IDX_FILES), "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        DatasetSpec(
            "kmnist", "KMNIST", 1, 28, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            (0.1918,), (0.3483,), "resnet8w", False, 2,
            tuple(f"KMNIST/raw/{f}" for f in _IDX_FILES), "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        DatasetSpec(
            "fashion-mnist", "FashionMNIST", 1, 28,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            (0.2860,), (0.3530,), "resnet8w", True, 2,
            tuple(f"FashionMNIST/raw/{f}" for f in _IDX_FILES),
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        DatasetSpec(
            "cifar10", "CIFAR10", 3, 32,
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "resnet20", True, 4,
            tuple(f"cifar-10-batches-py/{f}" for f in
                  ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                   "batches.meta"]),
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
        DatasetSpec(
            "svhn", "SVHN", 3, 32, _DIGITS, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "resnet20",
            False, 2, ("train_32x32.mat", "test_32x32.mat"), "http://ufldl.stanford.edu/housenumbers/",
        ),
        DatasetSpec(
            "stl10", "STL10", 3, 96,
            ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
            (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), "resnet18", True, 12,
            tuple(f"stl10_binary/{f}" for f in ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
                                               "unlabeled_X.bin"]),
            "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        ),
        DatasetSpec(
            "folder", "", 0, 32, (), (), (), "resnet20", True, 4, ("train/<class>/<image>", "test/<class>/<image>"),
        ),
    ]
}  # fmt: skip


def dataset_names() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


@dataclass
class ImageData:
    """One split of a dataset, in memory: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def _system_dirs() -> list[Path]:
    extra = [p for p in os.environ.get("RESNETLAB_SYSTEM_DATA", "").split(os.pathsep) if p]
    return [Path(p) for p in extra + SYSTEM_DATA_DIRS]


def _have_files(root: Path, spec: DatasetSpec) -> bool:
    return all((root / f).is_file() for f in spec.files)


def _find_system_copy(spec: DatasetSpec) -> Path | None:
    """A copy installed system-wide: IDX files (plain or .gz) in a folder named after the dataset, or a
    folder that already has torchvision's layout."""
    for base in _system_dirs():
        if _have_files(base, spec):
            return base
        for name in spec.system_names:
            folder = base / name
            if spec.is_idx:
                if all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in _IDX_FILES):
                    return folder
            elif folder.is_dir() and _have_files(folder, spec):
                return folder
    return None


def find_data(name: str, data_dir: str | Path) -> str | None:
    """Where the data of a named dataset is, without downloading: data_dir, a system copy, or None."""
    spec = get_spec(name)
    root = Path(data_dir)
    if spec.name == "folder":
        return str(root) if (root / "train").is_dir() else None
    if _have_files(root, spec):
        return str(root)
    system = _find_system_copy(spec)
    return str(system) if system else None


def _install_idx_copy(source: Path, root: Path, spec: DatasetSpec) -> None:
    """Put a system copy of IDX files where torchvision's MNIST classes read them: root/<Class>/raw/."""
    raw = root / spec.torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        target = raw / name
        if target.is_file():
            continue
        partial = target.with_suffix(".partial")
        if (source / name).is_file():
            shutil.copyfile(source / name, partial)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as fin, open(partial, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        os.replace(partial, target)


def _prepare_root(spec: DatasetSpec, data_dir: Path) -> Path:
    """The root to hand torchvision: data_dir, with a system copy installed into it if it has none."""
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is a file, not a folder; give a folder to keep the datasets in.")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {data_dir} ({e.strerror}); choose another --data-dir.")
    if not os.access(data_dir, os.R_OK | os.X_OK):
        raise UserError(f"the data folder {data_dir} is not readable; fix its permissions or choose another --data-dir.")
    if _have_files(data_dir, spec):
        return data_dir
    system = _find_system_copy(spec)
    if system is None:
        return data_dir
    if spec.is_idx:
        try:
            _install_idx_copy(system, data_dir, spec)
        except OSError as e:
            raise UserError(f"cannot copy {spec.name} from {system} into {data_dir} ({e}); choose another --data-dir.")
        return data_dir
    return system


def _torchvision_split(spec: DatasetSpec, root: Path, train: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.torchvision_class)
    # Files already in place are used as they are: SVHN's download() would otherwise fetch them again.
    download = not _have_files(root, spec)
    if spec.torchvision_class in ("SVHN", "STL10"):
        return cls(str(root), split="train" if train else "test", download=download)
    return cls(str(root), train=train, download=download)


def _missing_data_message(spec: DatasetSpec, root: Path, error: Exception) -> str:
    files = ", ".join(spec.files)
    return (
        f"could not download {spec.name} ({type(error).__name__}: {str(error).strip().splitlines()[0][:120]}); "
        f"with no internet, put its files ({files}) under {root.resolve()} (from {spec.url}) and run again."
    )


def _as_uint8_nchw(data, channels: int) -> torch.Tensor:
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8:
        raise UserError("the dataset's images are not 8-bit; resnetlab expects 8-bit images.")
    if x.ndim == 3:  # MNIST family: [N, H, W]
        return x.unsqueeze(1).contiguous()
    if x.shape[1] == channels:  # SVHN, STL10: [N, C, H, W]
        return x.contiguous()
    return x.permute(0, 3, 1, 2).contiguous()  # CIFAR: [N, H, W, C]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch [N, C, H, W] to size x size with antialiasing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def load_split(name: str, data_dir: str | Path, train: bool, image_size: int | None = None) -> ImageData:
    """Load the train or test split of a dataset into memory (downloading it first if it is not there)."""
    spec = get_spec(name)
    if spec.name == "folder":
        from .folder import load_folder_split

        return load_folder_split(Path(data_dir), train, image_size or spec.image_size)
    root = _prepare_root(spec, Path(data_dir))
    try:
        # torchvision prints its download attempts on stdout; they belong with progress, on stderr.
        with contextlib.redirect_stdout(sys.stderr):
            dataset = _torchvision_split(spec, root, train)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        if _have_files(root, spec):
            raise UserError(
                f"the {spec.name} files under {root} could not be read ({e}); delete them to download a fresh copy."
            ) from None
        raise UserError(_missing_data_message(spec, root, e)) from None
    images = _as_uint8_nchw(dataset.data, spec.channels)
    labels = torch.as_tensor(dataset.labels if hasattr(dataset, "labels") else dataset.targets, dtype=torch.int64)
    if image_size:
        images = resize_images(images, image_size)
    return ImageData(images, labels, list(spec.classes), spec.mean, spec.std, source=str(root))


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float, scaled to [0, 1], then standardized per channel."""
    return (images.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero-padding, per image, done for the whole batch with one gather."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [n, 1, h, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [n, 1, 1, w]
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def _generator(*keys: int) -> torch.Generator:
    """A generator seeded from several integers (seed, epoch, step), so any batch can be recreated alone."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + key) % (2**63)
    return torch.Generator().manual_seed(seed)


class TensorBatches:
    """Batches of (normalized float images, labels) from an ImageData held in memory.

    With shuffle=True the order of each epoch is a function of (seed, epoch) only, and the augmentation of
    each batch a function of (seed, epoch, step): an interrupted epoch resumes exactly where it stopped, and
    every process of a distributed run draws the same order. With rank/world_size, each process gets its own
    shard of that order. augment=True randomly translates images (and mirrors them where the dataset allows),
    on the uint8 batch, before normalization.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self.device = torch.device(device)
        self.memory_format = memory_format
        self.mean = torch.tensor(data.mean, device=self.device)
        self.std = torch.tensor(data.std, device=self.device)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Draw the order of this epoch, and begin at start_step (to resume an interrupted epoch)."""
        self.epoch = epoch
        self.start_step = start_step

    def _shard_size(self) -> int:
        n = len(self.data)
        return n // self.world_size if self.world_size > 1 else n

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.data)
        order = torch.randperm(n, generator=_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[self.rank :: self.world_size][: self._shard_size()]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        for step in range(self.start_step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = self.data.images[index]
            if self.augment:
                generator = _generator(self.seed, self.epoch, step, self.rank)
                if self.crop_padding:
                    images = random_translate(images, self.crop_padding, generator)
                if self.hflip:
                    images = random_hflip(images, generator)
            images = images.to(self.device, non_blocking=True)
            x = normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)
            yield x, self.data.labels[index].to(self.device, non_blocking=True)
