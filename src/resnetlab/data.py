"""Datasets by name: each spec knows its files and loads its splits into memory (batches.ImageData).

The six named datasets load through torchvision's own classes, from --data-dir or from a copy installed
system-wide (found offline); `folder` is a user's own images (folder.py).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from .batches import ImageData
from .errors import UserError
from .folder import FOLDER_LAYOUT, Holdout, find_folder, load_folder_split
from .preprocess import resize

__all__ = ["DATASETS", "DatasetSpec", "dataset_names", "find_data", "get_spec", "load_split", "load_train_test"]

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
    # How the torchvision class is called and what it holds, where it differs from MNIST's.
    is_idx: bool = False  # stored as the four IDX files of the MNIST family (a system copy may hold them gzipped)
    split_argument: bool = False  # the class takes split="train"/"test", not train=True/False
    pixel_layout: Literal["NHW", "NCHW", "NHWC"] = "NHW"  # the axes of its `data` array (NHW: one channel)
    labels_attribute: str = "targets"  # the attribute holding its labels

    @property
    def system_names(self) -> tuple[str, ...]:
        return (self.name, self.torchvision_class, self.torchvision_class.lower())

    @property
    def shape(self) -> str:
        return f"{self.channels}x{self.image_size}x{self.image_size}"

    def find(self, data_dir: str | Path) -> str | None:
        """Where the data is, without downloading: data_dir, a system copy, or None."""
        root = Path(data_dir)
        if _have_files(root, self):
            return str(root)
        system = _find_system_copy(self)
        return str(system) if system else None

    def load_split(
        self,
        data_dir: str | Path,
        train: bool,
        image_size: int | None = None,
        holdout: Holdout | None = None,
        cache_dir: str | None = None,
        channels: int | None = None,
        skip_bad: bool = False,
    ) -> ImageData:
        """The train or test split in memory, downloaded first if it is nowhere to be found. (holdout, cache_dir,
        channels and skip_bad: for folders, see folder.load_folder_split.)"""
        root = _prepare_root(self, Path(data_dir))
        try:
            # torchvision prints its download attempts on stdout; they belong with progress, on stderr.
            with contextlib.redirect_stdout(sys.stderr):
                dataset = _torchvision_split(self, root, train)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
            if _have_files(root, self):
                raise UserError(
                    f"the {self.name} files under {root} could not be read ({e}); delete them to download a fresh copy."
                ) from None
            raise UserError(_missing_data_message(self, root, e)) from None
        images = _as_uint8_nchw(dataset.data, self.pixel_layout)
        labels = torch.as_tensor(getattr(dataset, self.labels_attribute), dtype=torch.int64)
        if image_size:
            images = resize(images, image_size)
        return ImageData(images, labels, list(self.classes), self.mean, self.std, source=str(root))


@dataclass(frozen=True)
class FolderSpec(DatasetSpec):
    """A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...)."""

    @property
    def shape(self) -> str:
        return "any"

    def find(self, data_dir: str | Path) -> str | None:
        return find_folder(Path(data_dir))

    def load_split(
        self,
        data_dir: str | Path,
        train: bool,
        image_size: int | None = None,
        holdout: Holdout | None = None,
        cache_dir: str | None = None,
        channels: int | None = None,
        skip_bad: bool = False,
    ) -> ImageData:
        return load_folder_split(
            Path(data_dir), train, image_size or self.image_size, channels, holdout, cache_dir, skip_bad
        )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="mnist",
            torchvision_class="MNIST",
            channels=1,
            image_size=28,
            classes=_DIGITS,
            mean=(0.1307,),
            std=(0.3081,),
            default_model="resnet8w",
            hflip=False,
            crop_padding=2,
            files=tuple(f"MNIST/raw/{f}" for f in _IDX_FILES),
            url="https://ossci-datasets.s3.amazonaws.com/mnist/",
            is_idx=True,
        ),
        DatasetSpec(
            name="kmnist",
            torchvision_class="KMNIST",
            channels=1,
            image_size=28,
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            mean=(0.1918,),
            std=(0.3483,),
            default_model="resnet8w",
            hflip=False,
            crop_padding=2,
            files=tuple(f"KMNIST/raw/{f}" for f in _IDX_FILES),
            url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            is_idx=True,
        ),
        DatasetSpec(
            name="fashion-mnist",
            torchvision_class="FashionMNIST",
            channels=1,
            image_size=28,
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            mean=(0.2860,),
            std=(0.3530,),
            default_model="resnet8w",
            hflip=True,
            crop_padding=2,
            files=tuple(f"FashionMNIST/raw/{f}" for f in _IDX_FILES),
            url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            is_idx=True,
        ),
        DatasetSpec(
            name="cifar10",
            torchvision_class="CIFAR10",
            channels=3,
            image_size=32,
            classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            default_model="resnet9",
            hflip=True,
            crop_padding=4,
            files=tuple(
                f"cifar-10-batches-py/{f}"
                for f in [
                    "data_batch_1",
                    "data_batch_2",
                    "data_batch_3",
                    "data_batch_4",
                    "data_batch_5",
                    "test_batch",
                    "batches.meta",
                ]
            ),
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            pixel_layout="NHWC",
        ),
        DatasetSpec(
            name="svhn",
            torchvision_class="SVHN",
            channels=3,
            image_size=32,
            classes=_DIGITS,
            mean=(0.4377, 0.4438, 0.4728),
            std=(0.1980, 0.2010, 0.1970),
            default_model="resnet20",
            hflip=False,
            crop_padding=2,
            files=("train_32x32.mat", "test_32x32.mat"),
            url="http://ufldl.stanford.edu/housenumbers/",
            split_argument=True,
            pixel_layout="NCHW",
            labels_attribute="labels",
        ),
        DatasetSpec(
            name="stl10",
            torchvision_class="STL10",
            channels=3,
            image_size=96,
            classes=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
            mean=(0.4467, 0.4398, 0.4066),
            std=(0.2603, 0.2566, 0.2713),
            default_model="resnet18",
            hflip=True,
            crop_padding=12,
            files=tuple(
                f"stl10_binary/{f}"
                for f in ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"]
            ),
            url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            split_argument=True,
            pixel_layout="NCHW",
            labels_attribute="labels",
        ),
        FolderSpec(
            name="folder",
            torchvision_class="",
            channels=0,  # each folder's own: 1 when every image is grayscale, else 3
            image_size=32,
            classes=(),
            mean=(),
            std=(),
            default_model="resnet9",
            hflip=True,
            crop_padding=4,
            files=FOLDER_LAYOUT,
        ),
    ]
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


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
    return get_spec(name).find(data_dir)


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
        raise UserError(
            f"cannot create the data folder {data_dir} ({e.strerror}); choose another --data-dir."
        ) from None
    if not os.access(data_dir, os.R_OK | os.X_OK):
        raise UserError(
            f"the data folder {data_dir} is not readable; fix its permissions or choose another --data-dir."
        )
    if _have_files(data_dir, spec):
        return data_dir
    system = _find_system_copy(spec)
    if system is None:
        return data_dir
    if spec.is_idx:
        try:
            _install_idx_copy(system, data_dir, spec)
        except OSError as e:
            raise UserError(
                f"cannot copy {spec.name} from {system} into {data_dir} ({e}); choose another --data-dir."
            ) from None
        return data_dir
    return system


def _torchvision_split(spec: DatasetSpec, root: Path, train: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.torchvision_class)
    # Files already in place are used as they are: SVHN's download() would otherwise fetch them again.
    download = not _have_files(root, spec)
    split = {"split": "train" if train else "test"} if spec.split_argument else {"train": train}
    return cls(str(root), download=download, **split)


def _missing_data_message(spec: DatasetSpec, root: Path, error: Exception) -> str:
    files = ", ".join(spec.files)
    return (
        f"could not download {spec.name} ({type(error).__name__}: {str(error).strip().splitlines()[0][:120]}); "
        f"with no internet, put its files ({files}) under {root.resolve()} (from {spec.url}) and run again."
    )


def _as_uint8_nchw(data, layout: str) -> torch.Tensor:
    """A torchvision dataset's `data`, its axes named by layout (DatasetSpec.pixel_layout), as uint8 [N, C, H, W]."""
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8:
        raise UserError("the dataset's images are not 8-bit; resnetlab expects 8-bit images.")
    if "C" not in layout:  # one channel
        x, layout = x.unsqueeze(-1), layout + "C"
    return x.permute(*(layout.index(axis) for axis in "NCHW")).contiguous()


def load_split(
    name: str,
    data_dir: str | Path,
    train: bool,
    image_size: int | None = None,
    holdout: Holdout | None = None,
    cache_dir: str | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
) -> ImageData:
    """Load the train or test split of a dataset (downloading it first if it is not there). For folders: holdout,
    how a folder without train/ and test/ is split; cache_dir, where the decoded images are kept (None: the user
    cache folder, "": nowhere); channels, 1 or 3 (default: 1 when every image of the folder is grayscale);
    skip_bad, leave out the files that cannot be used instead of refusing the folder."""
    return get_spec(name).load_split(data_dir, train, image_size, holdout, cache_dir, channels, skip_bad)


def load_train_test(
    name: str,
    data_dir: str | Path,
    image_size: int | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    val_split: float = 0.2,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> tuple[ImageData, ImageData]:
    """Both splits, each optionally a random sample drawn with the seed; the test split carries the training
    split's mean and std, which normalize both. A folder without train/ and test/ holds out val_split of each
    class (drawn with the seed) as its test split; a folder's decoded images are cached in cache_dir (see
    load_split), and its test split takes the training split's channels (its images' headers are read once)."""
    train_data = load_split(
        name,
        data_dir,
        train=True,
        image_size=image_size,
        holdout=Holdout(val_split, seed),
        cache_dir=cache_dir,
        skip_bad=skip_bad,
    )
    holdout = Holdout(val_split, seed, train_data.holdout)
    test_data = load_split(
        name,
        data_dir,
        train=False,
        image_size=image_size,
        holdout=holdout,
        cache_dir=cache_dir,
        channels=train_data.channels,
        skip_bad=skip_bad,
    )
    if test_data.classes != train_data.classes:
        raise UserError("the train and test splits have different classes; make them match.")
    train_data, test_data = train_data.sample(subset, seed), test_data.sample(test_subset, seed)
    return train_data, replace(test_data, mean=train_data.mean, std=train_data.std)
