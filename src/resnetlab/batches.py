"""A split of a dataset, and its batches: shuffled, sharded and augmented a whole batch at a time.

Every dataset is held as one uint8 tensor [N, C, H, W], in memory or memory-mapped from a cache file (an image
folder, imagecache.py). For datasets of this size, batching and augmenting that tensor directly is much faster
on a CPU than per-image PIL transforms in a DataLoader, and it keeps the training loop free of worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


@dataclass
class ImageData:
    """One split of a dataset: uint8 images [N, C, H, W] and int64 labels [N].

    The pixels may be memory-mapped from a file (a cached image folder, folder.py), larger than memory. So a
    selection by position (select, sample, a held-out share) is kept as `rows` into them rather than copied, and
    batches copy only their own images (take); `images` gives the split as one tensor, for small ones."""

    pixels: torch.Tensor  # uint8 [M, C, H, W]: the split's images, or with rows, the images rows picks from
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what the loader skipped or assumed, for the user to read
    holdout: tuple[str, ...] = ()  # a folder without train/ and test/: the files held out for validation
    rows: torch.Tensor | None = None  # int64 [N]: the split is pixels[rows]; None: all the pixels, in order
    skipped: tuple[
        str, ...
    ] = ()  # a folder trained with --skip-bad: "path<TAB>problem<TAB>detail" of each file left out
    files: tuple[str, ...] = ()  # an image folder: each image's file, in the split's order; () for other datasets

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.pixels.shape[1]

    @property
    def image_size(self) -> int:
        return self.pixels.shape[-1]

    @property
    def images(self) -> torch.Tensor:
        """The split's images [N, C, H, W]: the pixels themselves (a view), or with rows a copy of the selected
        ones; for a large split, go through take or chunks instead."""
        return self.pixels if self.rows is None else self.pixels[self.rows]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """A copy of the images at positions `index` of the split (what one batch holds)."""
        return self.pixels[index if self.rows is None else self.rows[index]]

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """The split's images in order, `size` at a time (views of the pixels where no rows are selected)."""
        for start in range(0, len(self), size):
            yield self.select(slice(start, start + size)).images

    def select(self, index: torch.Tensor | slice) -> ImageData:
        """The images at index (a tensor of positions or a slice), with everything else kept; nothing is copied
        but the labels (positions become rows)."""
        files = self.files
        if files:
            files = files[index] if isinstance(index, slice) else tuple(files[i] for i in index.tolist())
        if self.rows is None and isinstance(index, slice):
            return replace(self, pixels=self.pixels[index], labels=self.labels[index], files=files)
        rows = torch.arange(len(self)) if self.rows is None else self.rows
        return replace(self, rows=rows[index], labels=self.labels[index], files=files)

    def sample(self, count: int | None, seed: int) -> ImageData:
        """count images drawn at random with the seed (all of them when count is None or not smaller)."""
        if count is None or count >= len(self):
            return self
        return self.select(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count])

    def with_channels(self, channels: int) -> ImageData:
        """The split as `channels`-channel images: grayscale becomes RGB by repeating its one channel (what Pillow's
        convert("RGB") does to a grayscale file, so training, eval and predict see the same pixels). The repeat is
        a view, not a copy; batches copy only the images they take. Color cannot become grayscale here."""
        if channels == self.channels:
            return self
        if (self.channels, channels) != (1, 3):
            raise ValueError(f"cannot turn {self.channels}-channel images into {channels}-channel ones")
        return replace(
            self, pixels=self.pixels.expand(-1, 3, -1, -1), mean=tuple(self.mean) * 3, std=tuple(self.std) * 3
        )


def random_translate(
    images: torch.Tensor, padding: int, generator: torch.Generator, reflect: bool = False
) -> torch.Tensor:
    """Random crop after zero-padding (or padding by reflection), per image, for the whole batch with one gather."""
    n, c, h, w = images.shape
    if reflect:  # reflect padding is not implemented for uint8
        padded = F.pad(images.float(), (padding,) * 4, mode="reflect").to(images.dtype)
    else:
        padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [n, 1, h, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [n, 1, 1, w]
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_resized_crop(images: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Inception-style random resized crops (torchvision's RandomResizedCrop, drawn per image from `generator`): a
    region of min_scale to all of each image's area, of aspect ratio 3/4 to 4/3, resized back to the image's size."""
    n, _, h, w = images.shape
    area = (min_scale + (1 - min_scale) * torch.rand(n, generator=generator)) * h * w
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=generator)
    ratio = torch.exp(log_ratio)
    widths = torch.sqrt(area * ratio).round().clamp(1, w).long()
    heights = torch.sqrt(area / ratio).round().clamp(1, h).long()
    tops = (torch.rand(n, generator=generator) * (h - heights + 1)).long()
    lefts = (torch.rand(n, generator=generator) * (w - widths + 1)).long()
    return torch.stack(
        [
            TF.resized_crop(image, top, left, height, width, [h, w], antialias=True)
            for image, top, left, height, width in zip(
                images, tops.tolist(), lefts.tolist(), heights.tolist(), widths.tolist()
            )
        ]
    )


def random_color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(brightness, contrast, saturation = strength) for a whole batch at once, with each
    image's factors drawn from `generator` in [1 - strength, 1 + strength] and applied in that order, as torchvision
    blends them (saturation only on colour images); rounded back to uint8 once, at the end."""
    n, c = images.shape[:2]
    brightness, contrast, saturation = (1 + strength * (2 * torch.rand(3, n, 1, 1, 1, generator=generator) - 1)).unbind(
        0
    )
    x = (images.float() * brightness).clamp(0, 255)
    gray = TF.rgb_to_grayscale(x) if c == 3 else x
    x = (contrast * x + (1 - contrast) * gray.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 255)
    if c == 3:
        x = (saturation * x + (1 - saturation) * TF.rgb_to_grayscale(x)).clamp(0, 255)
    return x.round().to(images.dtype)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return hflip_where(images, torch.rand(images.shape[0], generator=generator) < 0.5)


def hflip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def _generator(*keys: int) -> torch.Generator:
    """A generator seeded from several integers (seed, epoch, step), so any batch can be recreated alone."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + key) % (2**63)
    return torch.Generator().manual_seed(seed)


class TensorBatches:
    """Batches of (uint8 images, labels) from an ImageData, on the device; each batch copies only its own images.

    With shuffle=True the order of each epoch is a function of (seed, epoch) only, and the augmentation of
    each batch a function of (seed, epoch, step): an interrupted epoch resumes exactly where it stopped, and
    every process of a distributed run draws the same order. With rank/world_size, each process gets its own
    shard of that order. augment=True randomly translates images (crop_padding), crops and resizes them (crop_scale:
    the smallest share of an image's area kept), jitters their colours (jitter) and mirrors them where the dataset
    allows (hflip).
    Normalization is the model's first step (preprocess.PixelClassifier), the same for every command.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        crop_padding: int = 0,
        crop_scale: float | None = None,
        jitter: float = 0.0,
        hflip: bool = False,
        reflect: bool = False,
        alternate_flips: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.crop_padding = crop_padding
        self.crop_scale = crop_scale
        self.jitter = jitter
        self.hflip = hflip
        self.reflect = reflect
        self.alternate_flips = alternate_flips
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self.device = torch.device(device)

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

    def _alternating_flips(self) -> torch.Tensor:
        """airbench's alternating flip: which images are mirrored in this epoch. A random half in epoch 1, and
        every image mirrored in every other epoch from then on, so that each pair of epochs sees both sides."""
        first = torch.rand(len(self.data), generator=_generator(self.seed, -1)) < 0.5
        return first ^ bool((self.epoch - 1) % 2)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        flips = self._alternating_flips() if self.augment and self.hflip and self.alternate_flips else None
        for step in range(self.start_step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = self.data.take(index)
            if self.augment:
                generator = _generator(self.seed, self.epoch, step, self.rank)
                if self.crop_scale is not None:
                    images = random_resized_crop(images, self.crop_scale, generator)
                if self.crop_padding:
                    images = random_translate(images, self.crop_padding, generator, self.reflect)
                if self.jitter:
                    images = random_color_jitter(images, self.jitter, generator)
                if flips is not None:
                    images = hflip_where(images, flips[index])
                elif self.hflip:
                    images = random_hflip(images, generator)
            labels = self.data.labels[index]
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
