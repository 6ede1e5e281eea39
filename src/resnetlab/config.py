"""Training configuration: one dataclass built by the command line (or a test) and passed explicitly."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, regularization and augmentation. Learning rates are the peak of
    the one-cycle schedule, for the recipe's batch size."""

    name: str
    description: str
    batch_size: int
    lr: float  # peak learning rate (SGD with Nesterov momentum)
    momentum: float
    weight_decay: float  # L2 on conv and linear weights; none on BN parameters and biases
    label_smoothing: float
    warmup_fraction: float  # share of all steps spent warming up to the peak lr
    augment: bool  # random mirroring where the dataset allows, and random translation if translate
    tta_flip: bool  # average the prediction of each test image and its mirror, where the dataset allows
    schedule: str = "onecycle"  # "onecycle" (warm-up, then linear decay) or "step" (lr / 10 at each milestone)
    milestones: tuple[float, ...] = ()  # for "step": when to divide the lr by 10, as fractions of all steps
    translate: bool = True  # with augment: also translate images randomly by a few pixels


RECIPES: dict[str, Recipe] = {
    "fast": Recipe(
        name="fast",
        description="the default: the most accuracy in few epochs (one-cycle SGD with Nesterov momentum, "
        "label smoothing, no augmentation: in 4 epochs it cost more than it gave)",
        batch_size=128,
        lr=0.2,
        momentum=0.9,
        weight_decay=5e-4,
        label_smoothing=0.1,
        warmup_fraction=0.2,
        augment=False,
        tta_flip=False,
    ),
    "best": Recipe(
        name="best",
        description="for the highest accuracy: as fast, plus random mirroring where the dataset allows (no "
        "translation) and flip test-time augmentation; give it 14 epochs (on Fashion-MNIST 93.9% against fast's "
        "93.0% in 4)",
        batch_size=128,
        lr=0.2,
        momentum=0.9,
        weight_decay=5e-4,
        label_smoothing=0.1,
        warmup_fraction=0.15,
        augment=True,
        tta_flip=True,
        translate=False,
    ),
    # He et al. 2015, section 4.2: lr 0.1 divided by 10 at 32k and 48k of 64k iterations (164 epochs of
    # CIFAR-10 at batch 128), weight decay 1e-4, momentum 0.9, no label smoothing.
    "paper": Recipe(
        name="paper",
        description="He et al. 2015's CIFAR-10 schedule: SGD lr 0.1, divided by 10 at half and at three "
        "quarters of training, weight decay 1e-4; give it 164 epochs",
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        label_smoothing=0.0,
        warmup_fraction=0.0,
        augment=True,
        tta_flip=False,
        schedule="step",
        milestones=(0.5, 0.75),
    ),
}


@dataclass
class TrainConfig:
    """Everything `train` needs. None means: the dataset's or the recipe's default."""

    dataset: str = "fashion-mnist"
    data_dir: str = "./data"
    model: str | None = None
    epochs: int = 4
    batch_size: int | None = None
    lr: float | None = None
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    image_size: int | None = None
    recipe: str = "fast"
    shortcut: str | None = None
    augment: bool | None = None  # None: the recipe's
    subset: int | None = None  # train on this many images of the training set, drawn at random with the seed
    test_subset: int | None = None  # test on this many images of the test set, drawn at random with the seed
    overwrite: bool = False
    quiet: bool = False
    tensorboard: bool = False  # also write TensorBoard event files into OUT/tensorboard (needs the tensorboard extra)

    def to_dict(self) -> dict:
        return asdict(self)
