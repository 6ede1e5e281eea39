"""The model card: everything a trained model promises about itself, read and checked in one place.

It travels in checkpoints (as the top-level keys below, the layout every resnetlab checkpoint has had), in
exported ONNX models (metadata_props) and in TorchScript archives (resnetlab.json). `predict`, `eval`,
`export`, `explain` and `serve` rebuild the model and prepare its input from the card alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import IMAGE_SIZE_RANGE
from .errors import UserError

if TYPE_CHECKING:
    from torch import nn

MAX_CLASSES = 100_000  # far above any real dataset; bounds what a crafted card can make us allocate
DEFAULT_DATA_DIR = "./data"


@dataclass(frozen=True)
class ModelCard:
    architecture: str  # a name from models.list_models()
    classes: tuple[str, ...]
    in_channels: int  # 1: grayscale, 3: RGB
    image_size: int  # the model sees image_size x image_size pixels
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    test_time_flip: bool = False  # average each image's logits with its mirror's
    test_time_translate: bool = False  # ...and with those of its copies moved by one pixel (airbench)
    # The model's options that may be chosen (the rest are fixed by the architecture; the card records them too).
    shortcut: str | None = None  # "A" or "B"; None: the architecture's default
    stem: str | None = None  # one of the architecture's stems (models.ModelSpec.stems); None: its default
    dataset: str = ""
    data_dir: str = ""  # where the data was, for `eval` and `predict -n` without --data-dir
    holdout: tuple[str, ...] = ()  # a folder without train/ and test/: the validation files, relative to data_dir
    temperature: float = 1.0  # probabilities are softmax(logits / temperature), fitted after training (confidence.py)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def color(self) -> str:
        return "grayscale" if self.in_channels == 1 else "RGB"

    def build_model(self) -> nn.Module:
        """The architecture the card names, with fresh weights."""
        from .models import create_model

        options = {k: v for k, v in (("shortcut", self.shortcut), ("stem", self.stem)) if v is not None}
        return create_model(
            self.architecture, self.num_classes, self.in_channels, image_size=self.image_size, **options
        )

    def data_folder(self, override: str | None = None) -> str:
        """--data-dir if given, else the folder the model was trained from."""
        return override or self.data_dir or DEFAULT_DATA_DIR

    def to_dict(self) -> dict[str, Any]:
        """The card as a checkpoint stores it."""
        from .models import model_spec

        return {
            "model": {
                "name": self.architecture,
                "num_classes": self.num_classes,
                "in_channels": self.in_channels,
                # All of the model's options: the chosen ones, then those its architecture fixes (ModelSpec).
                "options": {
                    "shortcut": self.shortcut,
                    "stem": self.stem,
                    **model_spec(self.architecture).fixed_options(),
                },
            },
            "classes": list(self.classes),
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "test_time_flip": self.test_time_flip,
            "test_time_translate": self.test_time_translate,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "holdout": list(self.holdout),
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> ModelCard:
        """The card of a checkpoint or exported model, checked field by field before anything is built.

        Raises UserError naming `source` and the first field that is missing or out of range.
        """
        from .models import list_models

        check = CardChecker(values, source)
        model = check.get("model", dict)
        architecture = check.one_of("model.name", model.get("name"), list_models())
        options = check.options(architecture, model.get("options") or {})
        card = cls(
            architecture=architecture,
            classes=check.classes(),
            in_channels=check.channels(),
            image_size=check.whole("image_size", *IMAGE_SIZE_RANGE),
            mean=check.numbers("mean"),
            std=check.numbers("std", positive=True),
            test_time_flip=bool(values.get("test_time_flip", False)),
            test_time_translate=bool(values.get("test_time_translate", False)),
            shortcut=options.get("shortcut"),
            stem=options.get("stem"),
            dataset=str(values.get("dataset", "")),
            data_dir=str(values.get("data_dir") or ""),
            holdout=check.names("holdout"),
            temperature=check.positive("temperature", default=1.0),  # a card from before calibration: 1
        )
        if len(card.mean) != card.in_channels or len(card.std) != card.in_channels:
            check.fail("mean/std", f"must have one value per channel ({card.in_channels})")
        if model.get("num_classes", card.num_classes) != card.num_classes:
            check.fail("model.num_classes", f"says {model.get('num_classes')} but there are {card.num_classes} classes")
        return card


class CardChecker:
    """Reads fields of a card dict, failing with one sentence at the first bad one. Without PyTorch (the models
    are imported for model.options only), so that predict on an .onnx file can check its card (onnxlight.py)."""

    def __init__(self, values: Any, source: str) -> None:
        if not isinstance(values, dict):
            raise UserError(f"{source} has no model description; use a file written by resnetlab.")
        self.values, self.source = values, source

    def fail(self, field: str, problem: str) -> None:
        raise UserError(
            f"{self.source} has a damaged model description: {field} {problem}; use a file written by resnetlab."
        )

    def get(self, field: str, kind: type) -> Any:
        value = self.values.get(field)
        if not isinstance(value, kind):
            self.fail(field, f"is {'missing' if value is None else type(value).__name__}, not a {kind.__name__}")
        return value

    def one_of(self, field: str, value: Any, allowed: Any) -> Any:
        if isinstance(value, bool) or value not in allowed:
            self.fail(field, f"is {value!r}, not one of the known values")
        return value

    def options(self, architecture: str, options: Any) -> dict[str, Any]:
        """model.options: each one the architecture has (older cards record fewer; those left out are its
        defaults)."""
        from .models import option_problem

        if not isinstance(options, dict):
            self.fail("model.options", f"is a {type(options).__name__}, not a dict")
        problem = option_problem(architecture, options)
        if problem is not None:
            self.fail(f"model.options.{problem[0]}", problem[1])
        return options

    def whole(self, field: str, low: int, high: int) -> int:
        value = self.values.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, f"is {value!r}, not a whole number from {low} to {high}")
        return value

    def numbers(self, field: str, positive: bool = False) -> tuple[float, ...]:
        value = self.values.get(field)
        ok = (
            isinstance(value, (list, tuple))
            and 0 < len(value) <= 4
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
                for v in value
            )
        )
        if not ok:
            self.fail(field, f"is {str(value)[:40]!r}, not a list of {'positive ' if positive else ''}numbers")
        return tuple(float(v) for v in value)

    def positive(self, field: str, default: float) -> float:
        """An optional positive finite number (default when missing)."""
        value = self.values.get(field, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            self.fail(field, f"is {repr(value)[:40]}, not a positive number")
        return float(value)

    def names(self, field: str) -> tuple[str, ...]:
        """An optional list of strings (empty when missing)."""
        value = self.values.get(field) or []
        if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
            self.fail(field, "must be a list of file names")
        return tuple(value)

    def channels(self) -> int:
        return self.one_of("in_channels", self.values.get("in_channels"), (1, 3))

    def classes(self) -> tuple[str, ...]:
        value = self.values.get("classes")
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_CLASSES:
            self.fail("classes", f"must be a list of 1 to {MAX_CLASSES:,} names")
        if not all(isinstance(name, str) for name in value):
            self.fail("classes", "must hold names (strings)")
        return tuple(value)
