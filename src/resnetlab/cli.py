"""The command line: parses arguments and dispatches. No tensor code lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, Interrupted, UserError

EPILOG = "Each command has its own --help, e.g. resnetlab train --help. Docs: README.md."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own mistakes: one sentence and exit status 2, as ours
        raise UserError(f"{message}; see {self.prog} --help.")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seeds(text: str) -> int | list[int]:
    """--seeds: a count (3: --seed, --seed + 1, --seed + 2) or the seeds themselves, separated by commas (0,1,2)."""
    if "," not in text:
        return _positive_int(text)
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (3) or seeds separated by commas (0,1,2), not {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected different seeds, not {text!r}")
    return seeds


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 up to 1, not {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be from 0 up to (not including) 1, not {text}")
    return value


def _runtime_flags(p: argparse.ArgumentParser, precision: bool = True) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    if precision:
        p.add_argument(
            "--precision",
            default="auto",
            choices=["auto", "fp32", "bf16"],
            help="auto: bf16 where the CPU or GPU runs it in hardware, else fp32",
        )


def _cache_flags(p: argparse.ArgumentParser) -> None:
    """Where --dataset folder keeps its decoded images (folder.py, imagecache.py)."""
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="--dataset folder: where the decoded images "
        "are kept, memory-mapped, so that a folder is decoded once (until a file of it changes) and "
        "one larger than memory still trains; default: $XDG_CACHE_HOME/resnetlab, else "
        "~/.cache/resnetlab; '' for none",
    )
    cache.add_argument(
        "--no-cache",
        dest="cache_dir",
        action="store_const",
        const="",
        help="--dataset folder: decode the images into memory and write no cache (--cache-dir '')",
    )


def _checkpoint_data_dir(p: argparse.ArgumentParser, extra: str = "") -> None:
    p.add_argument("--data-dir", default=None, help=f"default: the folder the checkpoint was trained from{extra}")
    _cache_flags(p)


def _quiet(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--quiet", action="store_true", help=f"print nothing but errors{what}")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    _train_data_flags(p.add_argument_group("data"))
    _train_model_flags(p.add_argument_group("model and starting weights"))
    _train_schedule_flags(p.add_argument_group("schedule"))
    _train_stopping_flags(p.add_argument_group("imbalanced classes, when to stop"))
    _train_run_flags(p.add_argument_group("the run"))


def _train_data_flags(p) -> None:
    from .config import IMAGE_SIZE_RANGE, RECIPES, TrainConfig
    from .data import dataset_names

    p.add_argument("--dataset", default="fashion-mnist", help=f"one of: {', '.join(dataset_names())}")
    p.add_argument(
        "--data-dir",
        default="./data",
        help="where datasets are kept (torchvision's root); for "
        "--dataset folder, the folder holding class folders (or train/ and test/)",
    )
    _cache_flags(p)
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help=f"resize images to this many pixels square ({IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]}); "
        "default: the dataset's own size (32 for folders)",
    )
    p.add_argument(
        "--augment",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="random mirroring where the dataset allows, and the random translation, crops or colour jitter the "
        "recipe uses; default: the recipe's ("
        + "; ".join(f"{name}: {recipe.augmentation()}".replace("%", "%%") for name, recipe in RECIPES.items())
        + ")",
    )
    p.add_argument(
        "--subset",
        type=_positive_int,
        default=None,
        help="train on this many training images, drawn at random (a quick try)",
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=TrainConfig.val_split,
        metavar="SHARE",
        help="--dataset folder with class folders but no train/ and test/: the share of each class held "
        "out for validation (drawn with --seed; reported as the test split)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="--dataset folder: train without the files that cannot be used (empty, not images, damaged, too many "
        "pixels, unreadable) instead of refusing the folder; their list goes into OUT/skipped.txt",
    )


def _train_model_flags(p) -> None:
    from .config import PRETRAINED_DEFAULT_MODEL, fine_tune_rates
    from .models import list_models, pretrained_models

    p.add_argument(
        "--model",
        default=None,
        choices=list_models(),
        metavar="MODEL",
        help=f"one of: {', '.join(list_models())} (resnetlab models describes them); default: the recipe's, else "
        "the dataset's",
    )
    p.add_argument(
        "--shortcut", default=None, choices=["A", "B"], help="A: zero-padding, B: 1x1 projection; default: the model's"
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--pretrained",
        action="store_true",
        help=f"start from torchvision's ImageNet weights "
        f"({', '.join(pretrained_models())}; default {PRETRAINED_DEFAULT_MODEL}), downloaded once into "
        "$TORCH_HOME/hub/checkpoints: ImageNet's stem and mean/std, RGB input (grayscale images "
        "repeated into 3 channels), at least 64 px unless --image-size is given, a new head for the "
        f"classes; {fine_tune_rates()}",
    )
    start.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start from a resnetlab checkpoint (or run "
        "folder) of the same architecture, which --model defaults to: the head is kept for the same "
        "classes, new otherwise; mean/std are the data's; the image size defaults to the checkpoint's; "
        f"{fine_tune_rates()}",
    )


def _train_schedule_flags(p) -> None:
    from .config import (
        DATASET_RECIPES,
        DEFAULT_EPOCHS,
        DEFAULT_RECIPE,
        FEW_PHOTOS_LIMIT,
        FEW_PHOTOS_MINUTES,
        FEW_PHOTOS_RECIPE,
        RECIPE_ALIASES,
        RECIPES,
        SMALL_DATA_STEPS,
        TTA_CHOICES,
        TrainConfig,
    )

    recipe = RECIPES[DEFAULT_RECIPE]
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"passes over the training set; default: "
        f"{DEFAULT_EPOCHS} for the named datasets; for a folder of fewer than {FEW_PHOTOS_LIMIT} images trained from "
        f"scratch, as many as fit in --time-budget {FEW_PHOTOS_MINUTES:g}; for larger folders, from their size "
        f"(enough for about {SMALL_DATA_STEPS} optimizer steps, at least {DEFAULT_EPOCHS})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"default: the recipe's ({recipe.batch_size}); for small folders, about an eighth of the "
        "images (at least 16)",
    )
    p.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="peak learning rate; default: the recipe's, scaled with the batch size",
    )
    # argparse formats help with %, so a literal % in a description is written %%.
    by_dataset = ", ".join(f"{recipe} for {name}" for name, recipe in DATASET_RECIPES.items())
    by_dataset += f" ({FEW_PHOTOS_RECIPE} for folders of fewer than {FEW_PHOTOS_LIMIT} images trained from scratch)"
    p.add_argument(
        "--recipe",
        default=None,
        choices=[*RECIPES, *RECIPE_ALIASES],  # a former name is still taken, but not shown
        metavar="{" + ",".join(RECIPES) + "}",
        help=f"default: {by_dataset}, else "
        f"{DEFAULT_RECIPE}. " + "; ".join(f"{r.name}: {r.description}".replace("%", "%%") for r in RECIPES.values()),
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="evaluate on the test split after every Nth epoch (default: every one) and after the last; best.pt is "
        "the best of the evaluated epochs",
    )
    p.add_argument(
        "--tta",
        default=None,
        choices=TTA_CHOICES,
        help="test-time augmentation of the trained model, kept in its checkpoint: flip averages each "
        "image's prediction with its mirror's (where the dataset allows mirroring), translate also with "
        "both moved by one pixel (3x the evaluation time); default: the recipe's ("
        + ", ".join(f"{name}: {TrainConfig(recipe=name).effective_tta}" for name in RECIPES)
        + ")",
    )


def _train_stopping_flags(p) -> None:
    from .config import FEW_PHOTOS_LIMIT, FEW_PHOTOS_MINUTES, IMBALANCE_RATIO

    p.add_argument(
        "--balance",
        action="store_true",
        help="weight each class's loss inversely to its training images (torch's cross-entropy weight, which "
        "combines with the recipe's label smoothing), for classes of very different sizes; with or without it, "
        "--dataset folder chooses best.pt by balanced accuracy (the mean of the per-class accuracies) when its "
        f"largest class has more than {IMBALANCE_RATIO:g}x the training images of its smallest",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stop after N evaluations without a better held-out accuracy (balanced accuracy for imbalanced "
        "classes), keeping best.pt; the schedule is not shortened, so the stop comes before its decay ends. With "
        "--resume, a new N applies, and a run that stopped needs a larger one to train on",
    )
    p.add_argument(
        "--time-budget",
        type=_positive_float,
        default=None,
        metavar="MINUTES",
        help="plan the epochs so that training ends within MINUTES (the loading counted): a few steps are timed "
        "first, then as many epochs as fit (at most --epochs, if given) make the schedule, planned again after "
        "each epoch from the times measured; the notes say how many. "
        "A resumed run keeps the epochs it planned; without --eval-every, it evaluates every few epochs where "
        f"evaluating after each would cost over a quarter of the training. Default: none, but {FEW_PHOTOS_MINUTES:g} "
        f"minutes for a folder of fewer than {FEW_PHOTOS_LIMIT} images trained from scratch without --epochs",
    )


def _train_run_flags(p) -> None:
    p.add_argument("--out", default=None, help="run folder; default: a new runs/<dataset>-<model>[-N]")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace an earlier run's files")
    p.add_argument(
        "--resume",
        default=None,
        metavar="OUT",
        help="continue the run in folder OUT from its last.pt, with its own settings; --epochs (longer), "
        "--eval-every, --tta, --patience and where it runs (--device, --precision, --cache-dir) may be given anew",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="N_OR_LIST",
        help="train the same run once per seed, one after another, each into OUT/seed-N, and print (and write "
        "into OUT/seeds.json) each one's final test accuracy, their mean, std and min-max: N runs from --seed "
        "on (3: seeds 0, 1, 2), or the seeds given (0,1,2). The seed also draws --subset and the held-out share "
        "of class folders, so the spread includes theirs",
    )
    _runtime_flags(p)
    _quiet(p)
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files into OUT/tensorboard (the tensorboard extra)",
    )


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a best.pt / last.pt, a run folder, or a .onnx from resnetlab export")
    _checkpoint_data_dir(p)
    _runtime_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument(
        "--save",
        default=None,
        help="the picture of the confusion matrix; default: confusion_matrix.png beside the checkpoint",
    )
    p.add_argument(
        "--worst",
        type=_positive_int,
        default=None,
        metavar="N",
        help="also draw the N test images of the highest loss (at most 100: image, file or index, actual and "
        "predicted class, probability) into worst.png, and write every test image's prediction (index, file, "
        "actual, predicted, probability, loss) into predictions.csv beside it",
    )
    p.add_argument(
        "--worst-save",
        default=None,
        metavar="PATH",
        help="with --worst: the picture of the worst images (predictions.csv goes beside it); default: worst.png "
        "beside the checkpoint",
    )


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="a best.pt / last.pt, a run folder, or a .onnx file from resnetlab export (with image files, a .onnx "
        "file is run without importing PyTorch: an answer in well under a second)",
    )
    p.add_argument(
        "images", nargs="*", metavar="IMAGE_OR_DIR", help="image files or folders; default: the first N test images"
    )
    p.add_argument("-n", type=_positive_int, default=20, help="how many test images")
    _checkpoint_data_dir(p)
    p.add_argument(
        "--top", type=_positive_int, default=3, help="classes listed per image file (and per image with --json)"
    )
    p.add_argument(
        "--min-confidence",
        type=_confidence,
        default=None,
        metavar="P",
        help="answer 'unknown' (in the text, the JSON and the picture) where the top calibrated probability is below "
        "P (from 0 up to, not including, 1)",
    )
    p.add_argument(
        "--save", default=None, help="the picture of the predictions; default: predictions.png beside the checkpoint"
    )
    p.add_argument("--show", action="store_true", help="also open the picture in a window")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per image and line, nothing else; "
        "draws the picture only when --save or --show is given",
    )
    _quiet(p, " (the picture is still drawn)")
    _runtime_flags(p)
    _put_to_work_flags(p)


def _put_to_work_flags(p: argparse.ArgumentParser) -> None:
    """predict --csv, --sort-into, --link (sorting.py)."""
    p.add_argument(
        "--csv",
        default=None,
        metavar="FILE",
        help="write one row per image file into FILE (path, class, probability, then the --top classes and their "
        "probabilities), a chunk at a time; photos FILE already lists are skipped, so a stopped run goes on",
    )
    p.add_argument(
        "--sort-into",
        default=None,
        metavar="OUT",
        help="copy each photo into OUT/<class>/ (OUT/unknown/ below --min-confidence); your photos are only read: "
        "a name taken by another file gets -2, -3, ...; a photo already there is skipped, so a stopped run goes on",
    )
    p.add_argument("--link", action="store_true", help="with --sort-into: hard-link the photos instead of copying them")


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by resnetlab train")
    _checkpoint_data_dir(p, "; without the test data, only curves.png is drawn")
    p.add_argument("-n", type=_positive_int, default=20, help="how many test images in predictions.png")
    _runtime_flags(p)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from .config import EXPORT_CHECK_IMAGES, EXPORT_TOLERANCE, INT8_CALIBRATION_IMAGES, INT8_MIN_AGREEMENT
    from .formats import EXPORT_FORMATS, int8_formats

    formats = list(EXPORT_FORMATS.values())
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument(
        "--format", default=formats[0].name, choices=list(EXPORT_FORMATS), help="; ".join(f.help for f in formats)
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="the file to write; default: beside the checkpoint, " + " or ".join(f.file_name("best") for f in formats),
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="test images to check the export on; default: the folder the "
        "checkpoint was trained from (random images where there are none)",
    )
    _cache_flags(p)
    p.add_argument(
        "--check-images", type=_positive_int, default=EXPORT_CHECK_IMAGES, help="how many images to check on"
    )
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        default=EXPORT_TOLERANCE,
        help="largest difference in probability from PyTorch that passes the check",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help=f"{' or '.join(f.name for f in int8_formats())} only: quantize to int8 (calibrated on "
        f"{INT8_CALIBRATION_IMAGES} training images; faster on CPUs), checked to keep the top class of "
        f"{round(INT8_MIN_AGREEMENT * 100)}%% of the check images",
    )
    p.add_argument("--json", action="store_true", help="print the check's report as one JSON object")


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CKPT_OR_ONNX",
        help="a best.pt / last.pt, a run folder, or a .onnx file from resnetlab export",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it to the network")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    _runtime_flags(p)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="a host name (or address) the server answers to besides localhost and 127.0.0.1, e.g. the "
        "machine's name; repeatable. Without it, a server on a network address (--host) answers to any "
        "name",
    )


def _degradation_arguments(p: argparse.ArgumentParser) -> None:
    from .config import FULL_DEGRADATION as FULL
    from .config import RECIPE_ALIASES, RECIPES, DegradationConfig

    quick = DegradationConfig()
    p.add_argument("--dataset", default=None, help=f"default: {quick.dataset}; with --full, {FULL.dataset}")
    p.add_argument("--data-dir", default=quick.data_dir, help=f"where datasets are kept (default: {quick.data_dir})")
    _cache_flags(p)
    p.add_argument(
        "--depths",
        default=None,
        help="comma-separated depths, each trained as plainD and resnetD; "
        f"default: {quick.depths_text}; with --full, {FULL.depths_text}",
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help=f"default: {quick.epochs}; with --full, {FULL.epochs}"
    )
    p.add_argument(
        "--subset",
        type=_positive_int,
        default=None,
        help=f"train on this many training images; default: {quick.subset}; with --full, all",
    )
    p.add_argument(
        "--test-subset",
        type=_positive_int,
        default=None,
        help=f"test on this many test images; default: {quick.test_subset}; with --full, all",
    )
    p.add_argument(
        "--train-eval-size",
        type=_positive_int,
        default=None,
        help="training images on which the "
        "training error is measured, without augmentation, after each epoch; default: "
        f"{quick.train_eval_size}; with --full, {FULL.train_eval_size}",
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=[*RECIPES, *RECIPE_ALIASES],
        metavar="{" + ",".join(RECIPES) + "}",
        help=f"default: {quick.recipe}; with --full, {FULL.recipe}",
    )
    p.add_argument(
        "--augment",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="the recipe's augmentation (see train --augment) while training; default: off (on with "
        "--full, as in the paper)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"default: {quick.batch_size}; with --full, the recipe's ({RECIPES[FULL.recipe].batch_size})",
    )
    p.add_argument("--lr", type=_positive_float, default=None, help="default: the recipe's, scaled with the batch size")
    p.add_argument(
        "--seed", type=int, default=quick.seed, help=f"random seed, the same for every net (default: {quick.seed})"
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for the runs, degradation.png, degradation.csv and "
        f"degradation.md; default: {quick.out}, with --full {FULL.out}",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="the paper's CIFAR-10 setting: 164 epochs on all 50k "
        "images, lr 0.1 divided by 10 at half and three quarters; for a GPU",
    )
    p.add_argument("--overwrite", action="store_true", help="train again nets whose runs are already in --out")
    _runtime_flags(p)
    _quiet(p)


def _gradients_arguments(p: argparse.ArgumentParser) -> None:
    from .config import GradientsConfig
    from .data import dataset_names

    default = GradientsConfig()
    p.add_argument(
        "--dataset", default=default.dataset, help=f"one of: {', '.join(dataset_names())} (default: {default.dataset})"
    )
    p.add_argument(
        "--data-dir", default=default.data_dir, help=f"where datasets are kept (default: {default.data_dir})"
    )
    _cache_flags(p)
    p.add_argument(
        "--depths",
        default=default.depths_text,
        help=f"comma-separated depths, each built as plainD and resnetD (default: {default.depths_text})",
    )
    p.add_argument(
        "--batches",
        type=_positive_int,
        default=default.batches,
        help=f"training batches the gradient norms are averaged over (default: {default.batches})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=default.batch_size,
        help=f"images per batch (default: {default.batch_size})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=default.seed,
        help="random seed of the initial weights, the same for "
        f"every net, and of the images drawn (default: {default.seed})",
    )
    p.add_argument(
        "--out", default=default.out, help=f"folder for gradients.csv and gradients.png (default: {default.out})"
    )
    _runtime_flags(p, precision=False)
    _quiet(p)


def _responses_arguments(p: argparse.ArgumentParser) -> None:
    from .config import ResponsesConfig

    default = ResponsesConfig()
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="RUN_OR_CKPT",
        help="trained checkpoints (best.pt / last.pt) "
        "or run folders, e.g. the degradation experiment's runs/degradation/plain20 and "
        "runs/degradation/resnet20",
    )
    _checkpoint_data_dir(p, ", for each checkpoint its own")
    p.add_argument(
        "--test-subset",
        type=_positive_int,
        default=default.test_subset,
        help=f"test images the responses are measured on, drawn at random with --seed (default: {default.test_subset})",
    )
    p.add_argument("--seed", type=int, default=default.seed, help=f"random seed (default: {default.seed})")
    p.add_argument(
        "--out", default=default.out, help=f"folder for responses.csv and responses.png (default: {default.out})"
    )
    _runtime_flags(p, precision=False)
    _quiet(p)


def _experiment_arguments(p: argparse.ArgumentParser) -> None:
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=_Parser, required=True)
    _degradation_arguments(
        experiments.add_parser(
            "degradation",
            help="plain and residual nets of growing depth: training and test error per epoch (He et "
            "al. 2015, Figures 1 and 6)",
        )
    )
    _gradients_arguments(
        experiments.add_parser(
            "gradients",
            help="the gradient norm of each layer of plain and residual nets at the start of training: "
            "do the gradients vanish?",
        )
    )
    _responses_arguments(
        experiments.add_parser(
            "responses", help="the std of each 3x3 layer's response in trained nets (He et al. 2015, Figure 7)"
        )
    )


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_TEST_INDEX",
        help="image files or folders, or indices into the test split (0: the first test image)",
    )
    p.add_argument("--out", default=None, help="the picture; default: gradcam.png beside the checkpoint")
    p.add_argument(
        "--stage",
        type=_positive_int,
        default=None,
        help="explain the output of this stage (1: the first); default: the last",
    )
    _checkpoint_data_dir(p)
    _runtime_flags(p, precision=False)


def _datasets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="./data")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    p.add_argument("folder", help="the folder train would be given as --data-dir (class folders, or train/ and test/)")
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="the training size: images smaller than this are counted; default: the size train would choose for "
        "the folder",
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=TrainConfig.val_split,
        metavar="SHARE",
        help="class folders without train/ and test/: the share held out, as train --val-split (with --seed)",
    )
    p.add_argument("--seed", type=int, default=0, help="as train --seed: the same seed holds out the same images")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON (every file, no caps)")
    p.add_argument("--sheet", default=None, metavar="PNG", help="draw the groups of copies into this PNG file")
    p.epilog = (
        "Exit status: 0 when nothing is wrong; 1 when something is: a file train refuses, a group of copies "
        "(same bytes or the same photo resized or recompressed: in a class, across classes, or across the "
        "training and held-out parts), or a largest class over 5x the smallest; 2 for a mistake in the command. "
        "Files the folder rules skip (hidden, links, other formats) and small images are reported, not counted."
    )


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


def _flag_values(config_class: type, args: argparse.Namespace, **converted: Any) -> dict[str, Any]:
    """Each field of a config dataclass that a flag sets, from the flag of the same name (--batch-size sets
    batch_size; there are no renames, so a ConfigError's field names its flag), with `converted` for flags whose
    text is turned into the field's type first. Fields without a flag are left out, to keep their defaults."""
    flags = vars(args)
    return {f.name: flags[f.name] for f in fields(config_class) if f.name in flags} | converted


def _train(args: argparse.Namespace) -> None:
    from .config import TrainConfig
    from .engine import resume_config, train

    config = TrainConfig(**_flag_values(TrainConfig, args))
    if args.seeds is not None:
        _train_seeds(config, args)
        return
    if args.resume:  # the flags given are applied where a resumed run can take them, refused where it cannot
        config, state = resume_config(args.resume, config)
        train(config, resume_state=state)
        return
    train(config)


def _check(args: argparse.Namespace) -> None:
    from .check import FolderHasProblems, check_folder, refuse_sheet_inside, summary, write_sheet
    from .config import TrainConfig
    from .data import get_spec
    from .folder import Holdout

    TrainConfig(dataset="folder", image_size=args.image_size, val_split=args.val_split).validate()
    root = Path(args.folder)
    if args.sheet:
        refuse_sheet_inside(root, Path(args.sheet))
    image_size = args.image_size or get_spec("folder").image_size  # the few-photos default trains at it too
    report = check_folder(root, image_size, Holdout(args.val_split, args.seed))
    print(json.dumps(report.to_json(), indent=1) if args.json else "\n".join(summary(report)))
    sheet = write_sheet(report, root, Path(args.sheet)) if args.sheet else None
    if sheet and not args.json:
        print(f"contact sheet of the copies: {sheet}")
    if report.problems:
        raise FolderHasProblems(f"{report.problems} problem(s) in {root}; fix them, or train knowing them.")


def _train_seeds(config: Any, args: argparse.Namespace) -> None:
    from .seeds import describe_seeds, train_seeds

    if args.resume:
        raise UserError(
            f"--seeds cannot be combined with --resume; resume one seed's run at a time: resnetlab train --resume "
            f"{args.resume}/seed-N."
        )
    seeds = list(range(args.seed, args.seed + args.seeds)) if isinstance(args.seeds, int) else args.seeds
    result = train_seeds(config, seeds)
    if not args.quiet:
        print("\n".join(describe_seeds(result)))


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines)


def _eval(args: argparse.Namespace) -> None:
    from .confidence import describe_calibration
    from .evaluation import evaluate_checkpoint
    from .metrics import describe_accuracy

    if args.worst_save and not args.worst:
        raise UserError("--worst-save names the picture of --worst N; give --worst N too.")
    result = evaluate_checkpoint(
        args.checkpoint,
        args.data_dir,
        args.device,
        args.precision,
        args.cache_dir,
        args.save,
        args.worst,
        args.worst_save,
    )
    if args.json:
        print(json.dumps(result.to_json()))
        return
    card, stats = result.card, result.stats
    print(f"{card.architecture} on {card.dataset} ({stats['images']} test images, {result.runtime})")
    top5 = f", top-5 accuracy {stats['test_top5_accuracy']:.2%}" if "test_top5_accuracy" in stats else ""
    accuracy = describe_accuracy(stats["test_accuracy"], stats["images"])
    print(
        f"test average loss {stats['test_loss']:.4f}, accuracy {accuracy}{top5}, "
        f"{stats['images_per_second']:.0f} images/s"
    )
    print(
        f"macro average over the classes: precision {stats['macro_precision']:.2%}, recall "
        f"{stats['macro_recall']:.2%}, F1 {stats['macro_f1']:.2%}\n"
    )
    _print_eval_tables(card, stats)
    print("\n" + describe_calibration(stats["calibration"], "from the model card"))
    print(f"picture: {result.picture}\nreliability: {result.reliability}")
    if result.worst:
        print(f"worst images: {result.worst.picture}; every test image's prediction: {result.worst.table}")


def _print_eval_tables(card: Any, stats: dict[str, Any]) -> None:
    """eval's per-class table, its commonest mistakes and its confusion matrix."""
    from .plots import short_label

    columns = ("confusion_matrix", "per_class_precision", "per_class_recall", "per_class_f1")
    rows = [
        [short_label(name, width=40), sum(row), *(f"{v:.2%}" if v == v else "-" for v in values)]
        for name, row, *values in zip(card.classes, *(stats[c] for c in columns))
    ]
    print(_format_table(["class", "images", "precision", "recall", "F1"], rows))
    print("(recall: the share of the class's images given the class, its accuracy)")
    if stats["most_confused"]:
        print("\nmost confused (actual -> predicted: images)")
        for pair in stats["most_confused"]:
            print(f"  {short_label(pair['actual'], 40)} -> {short_label(pair['predicted'], 40)}: {pair['count']}")
    print("\nconfusion matrix (rows: actual, columns: predicted, in class order above)")
    print(
        _format_table(
            [""] + [str(i) for i in range(card.num_classes)],
            [[str(i)] + [str(v) for v in row] for i, row in enumerate(stats["confusion_matrix"])],
        )
    )


def _predict(args: argparse.Namespace) -> None:
    if args.csv is not None or args.sort_into is not None or args.link:
        _put_to_work(args)
        return
    from .onnxlight import is_onnx

    say = print if not (args.quiet or args.json) else lambda *a: None

    def report(record: dict | None, line: str) -> None:
        if args.json and record is not None:
            print(json.dumps(record), flush=True)
        say(line)

    if is_onnx(args.checkpoint) and args.images:  # answered without importing PyTorch
        from .onnxlight import predict_files

        picture: Any = predict_files(
            args.checkpoint, args.images, args.top, report, args.device, args.save, args.min_confidence
        )
    else:
        from .prediction import predict

        picture = predict(
            args.checkpoint,
            args.images,
            args.n,
            args.top,
            report,
            args.data_dir,
            args.cache_dir,
            args.device,
            args.precision,
            args.save,
            args.min_confidence,
        )
    if args.json and not (args.save or args.show):
        return
    picture.draw(args.show)
    say(f"picture: {picture.path}")


def _put_to_work(args: argparse.Namespace) -> None:
    from .sorting import put_to_work

    lines = put_to_work(
        args.checkpoint,
        args.images,
        args.csv,
        args.sort_into,
        args.top,
        args.link,
        args.min_confidence,
        args.device,
        args.precision,
        args.quiet,
    )
    if not args.quiet:
        print("\n".join(lines))


def _plot(args: argparse.Namespace) -> None:
    from .plotting import plot_run

    for line in plot_run(args.run, args.data_dir, args.device, args.precision, args.n, args.cache_dir):
        print(line)


def _export(args: argparse.Namespace) -> None:
    from .export import export_checkpoint

    report = export_checkpoint(
        args.checkpoint,
        args.format,
        args.output,
        args.data_dir,
        args.check_images,
        args.tolerance,
        args.int8,
        args.cache_dir,
    )
    if args.json:
        print(json.dumps(report))
        return
    size = Path(report["file"]).stat().st_size / 1e6
    print(f"wrote {report['file']} ({args.format}, {report['precision']}, {size:.1f} MB)")
    if args.int8:
        print(
            f"calibrated on {report['calibrated_on']}; checked on {report['checked_on']}: same top class as "
            f"PyTorch fp32 for {report['same_top_class']} of {report['images']} (at least "
            f"{report['min_agreement']:.0%} needed); largest difference {report['max_abs_diff_probabilities']:.1e} "
            "in probability"
        )
        return
    print(
        f"checked on {report['checked_on']}: largest difference from PyTorch "
        f"{report['max_abs_diff_probabilities']:.1e} in probability (tolerance {report['tolerance']:.0e}), "
        f"{report['max_abs_diff_logits']:.1e} in logits; "
        f"same top class for {report['same_top_class']} of {report['images']}"
    )


def _serve(args: argparse.Namespace) -> None:
    try:
        from .serve import serve
    except ImportError as e:
        if (e.name or "").split(".")[0] not in {"fastapi", "starlette", "pydantic", "uvicorn", "python_multipart"}:
            raise
        raise UserError(
            f"resnetlab serve needs the serve extra ({e.name} is missing); install it from the resnetlab "
            "folder with: pip install -e '.[serve]'."
        ) from None
    serve(args.checkpoint, args.host, args.port, args.device, args.precision, getattr(args, "allowed_host", []))


def _experiment(args: argparse.Namespace) -> None:
    experiments = {"degradation": _degradation, "gradients": _gradients, "responses": _responses}
    experiments[args.experiment](args)


def _degradation(args: argparse.Namespace) -> None:
    from .config import DegradationConfig, degradation_config
    from .experiments import parse_depths, run_degradation

    depths = parse_depths(args.depths) if args.depths else None
    given = _flag_values(DegradationConfig, args, depths=depths)
    config = degradation_config(args.full, **{k: v for k, v in given.items() if v is not None})
    run_degradation(config)


def _gradients(args: argparse.Namespace) -> None:
    from .config import GradientsConfig
    from .experiments import parse_depths, run_gradients

    run_gradients(GradientsConfig(**_flag_values(GradientsConfig, args, depths=parse_depths(args.depths))))


def _responses(args: argparse.Namespace) -> None:
    from .config import ResponsesConfig
    from .experiments import run_responses

    run_responses(ResponsesConfig(**_flag_values(ResponsesConfig, args, checkpoints=tuple(args.checkpoints))))


def _explain(args: argparse.Namespace) -> None:
    from .checkpoint import resolve_path
    from .explain import draw_explanation, explain_checkpoint, explanation_lines

    out = Path(args.out) if args.out else resolve_path(args.checkpoint).parent / "gradcam.png"
    explanation = explain_checkpoint(
        args.checkpoint, args.images, args.data_dir, args.stage, args.device, args.cache_dir
    )
    print("\n".join(explanation_lines(explanation)))
    print(f"picture: {draw_explanation(explanation, out)}")


def _datasets(args: argparse.Namespace) -> None:
    from .data import DATASETS

    rows = []
    for spec in DATASETS.values():
        if spec.classes:
            classes = ", ".join(spec.classes)
            classes = classes if len(classes) < 48 else classes[:45] + "..."
            where = spec.find(args.data_dir) or "not found (downloaded on first use)"
        else:
            classes, where = "from folder names", "--data-dir DIR with DIR/<class>/ (or DIR/train/ and DIR/test/)"
        rows.append([spec.name, spec.shape, classes, where])
    print(_format_table(["dataset", "images", "classes", "data"], rows))


def _models(args: argparse.Namespace) -> None:
    from .models import count_parameters, create_model, list_models, model_summary

    rows = []
    for name in list_models():
        params = count_parameters(create_model(name, num_classes=10, in_channels=3))
        rows.append([name, f"{params / 1e6:.2f}M", model_summary(name)])
    print(_format_table(["model", "params (10 classes, RGB)", "blocks"], rows))


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    show_defaults: bool = True  # ArgumentDefaultsHelpFormatter


COMMANDS: dict[str, Command] = {
    "train": Command("train a model; writes best.pt, last.pt, metrics.csv, summary.json", _train_arguments, _train),
    "eval": Command("test accuracy, per-class accuracy and confusion matrix of a checkpoint", _eval_arguments, _eval),
    "predict": Command("predict test images (or your image files) and draw them", _predict_arguments, _predict),
    "plot": Command(
        "draw a run's pictures again from its files: curves.png, confusion_matrix.png, predictions.png",
        _plot_arguments,
        _plot,
    ),
    "export": Command(
        "write a checkpoint as ONNX or TorchScript for other programs, checked against PyTorch",
        _export_arguments,
        _export,
    ),
    "serve": Command("a local web page and an HTTP API for a trained model", _serve_arguments, _serve),
    "experiment": Command(
        "run an experiment about the ResNet paper: degradation, gradients or responses",
        _experiment_arguments,
        _experiment,
        show_defaults=False,
    ),
    "explain": Command("Grad-CAM: which part of the image decided the class", _explain_arguments, _explain, False),
    "check": Command(
        "look over a folder of your images before training: bad files, copies, counts", _check_arguments, _check
    ),
    "datasets": Command("list datasets and where their data was found", _datasets_arguments, _datasets, False),
    "models": Command("list models with their parameter counts", _no_arguments, _models, False),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given the command line, the arguments of its command only, as the others'
    import what they list (train's datasets and models import PyTorch, which `predict MODEL.onnx` does without)."""
    parser = _Parser(prog="resnetlab", description="Train, evaluate and run ResNet image classifiers.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = next((word for word in argv or [] if not word.startswith("-")), None)
    for name, command in COMMANDS.items():
        formatter = argparse.ArgumentDefaultsHelpFormatter if command.show_defaults else argparse.HelpFormatter
        command_parser = sub.add_parser(name, help=command.help, formatter_class=formatter)
        if chosen not in COMMANDS or name == chosen:
            command.arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `resnetlab` command. Returns the exit status."""
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        COMMANDS[args.command].run(args)
        return 0
    except ConfigError as e:  # a config field out of range: name its flag
        print(f"resnetlab: error: --{e.field.replace('_', '-')} {e.problem}.", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        print(f"resnetlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"resnetlab: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into head or less, which stopped reading
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("resnetlab: interrupted.", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
