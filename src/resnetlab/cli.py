"""The command line: parses arguments and dispatches. No tensor code lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .config import RECIPES
    from .data import dataset_names

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="resnetlab", description="Train, evaluate and run ResNet image classifiers.",
                     epilog=EPILOG)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a model; writes best.pt, last.pt, metrics.csv, summary.json",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("--dataset", default="fashion-mnist", help=f"one of: {', '.join(dataset_names())}")
    p.add_argument("--data-dir", default="./data", help="where datasets are kept (torchvision's root); for "
                   "--dataset folder, the folder holding train/ and test/")  # fmt: skip
    p.add_argument("--model", default=None, help="model name (resnetlab models); default: the dataset's")
    p.add_argument("--epochs", type=_positive_int, default=4, help="passes over the training set")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default: the recipe's (128)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate; default: the recipe's, scaled with the batch size")  # fmt: skip
    p.add_argument("--recipe", default="fast", choices=list(RECIPES), help="; ".join(
        f"{r.name}: {r.description}" for r in RECIPES.values()))  # fmt: skip
    p.add_argument("--out", default=None, help="run folder; default: a new runs/<dataset>-<model>[-N]")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace an earlier run's files")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 where the CPU or GPU runs it in hardware, else fp32")  # fmt: skip
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="resize images to this many pixels square; default: the dataset's own size (32 for "
                   "folders)")  # fmt: skip
    p.add_argument("--shortcut", default=None, choices=["A", "B"],
                   help="A: zero-padding, B: 1x1 projection; default: the model's")  # fmt: skip
    p.add_argument("--subset", type=_positive_int, default=None,
                   help="train on this many training images, drawn at random (a quick try)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")

    p = sub.add_parser("eval", help="test accuracy, per-class accuracy and confusion matrix of a checkpoint",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")

    p = sub.add_parser("predict", help="predict test images (or your image files) and draw them",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR",
                   help="image files or folders; default: the first N test images")  # fmt: skip
    p.add_argument("-n", type=_positive_int, default=20, help="how many test images")
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    p.add_argument("--top", type=_positive_int, default=3, help="classes shown per image file")
    p.add_argument("--save", default=None, help="the picture of the predictions; default: "
                   "predictions.png beside the checkpoint")  # fmt: skip
    p.add_argument("--show", action="store_true", help="also open the picture in a window")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])

    p = sub.add_parser("datasets", help="list datasets and where their data was found")
    p.add_argument("--data-dir", default="./data")
    sub.add_parser("models", help="list models with their parameter counts")
    return parser


def _train(args: argparse.Namespace) -> None:
    from .config import TrainConfig
    from .engine import train

    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, out=args.out, seed=args.seed, device=args.device,
        precision=args.precision, image_size=args.image_size, recipe=args.recipe, shortcut=args.shortcut,
        overwrite=args.overwrite, quiet=args.quiet, subset=args.subset,
    )  # fmt: skip
    train(config)


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines)


def _eval(args: argparse.Namespace) -> None:
    from .inference import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.precision)
    data = predictor.load_test_data(args.data_dir)
    stats = predictor.evaluate(data)
    ckpt = predictor.checkpoint
    if args.json:
        out = {"checkpoint": str(args.checkpoint), "model": ckpt["model"]["name"], "dataset": ckpt["dataset"],
               "classes": predictor.classes, **stats}  # fmt: skip
        print(json.dumps(out))
        return
    print(f"{ckpt['model']['name']} on {ckpt['dataset']} ({stats['images']} test images, "
          f"{predictor.runtime.describe()})")  # fmt: skip
    print(f"test average loss {stats['test_loss']:.4f}, accuracy {stats['test_accuracy']:.2%}, "
          f"{stats['images_per_second']:.0f} images/s\n")  # fmt: skip
    rows = [[name, sum(row), f"{acc:.2%}"] for name, row, acc in
            zip(predictor.classes, stats["confusion_matrix"], stats["per_class_accuracy"])]  # fmt: skip
    print(_format_table(["class", "images", "accuracy"], rows))
    print("\nconfusion matrix (rows: actual, columns: predicted, in class order above)")
    print(_format_table([""] + [str(i) for i in range(len(predictor.classes))],
                        [[str(i)] + [str(v) for v in row] for i, row in enumerate(stats["confusion_matrix"])]))


def _predict(args: argparse.Namespace) -> None:
    from .checkpoint import resolve_path
    from .inference import Predictor, expand_image_paths
    from .plots import prediction_grid

    predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.precision)
    save = Path(args.save) if args.save else resolve_path(args.checkpoint).parent / "predictions.png"
    if args.images:
        paths = expand_image_paths(args.images)
        images = predictor.prepare_images(paths)
        probabilities = predictor.probabilities_of_images(images)
        tops = predictor.top_classes(probabilities, args.top)
        for path, top in zip(paths, tops):
            print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in top))
        predicted = [top[0][0] for top in tops]
        confidence = [top[0][1] for top in tops]
        prediction_grid(images[:100], predicted[:100], confidence[:100], None, save, args.show)
    else:
        data = predictor.load_test_data(args.data_dir, limit=args.n)
        probabilities, labels = predictor.probabilities(data)
        confidence, indices = probabilities.max(1)
        predicted = [predictor.classes[i] for i in indices.tolist()]
        actual = [predictor.classes[i] for i in labels.tolist()]
        for p, a in zip(predicted, actual):
            print(f'predicted: "{p}", actual: "{a}"')
        right = sum(p == a for p, a in zip(predicted, actual))
        print(f"{right} of {len(actual)} right ({right / len(actual):.0%})")
        prediction_grid(data.images[:100], predicted[:100], confidence.tolist()[:100], actual[:100], save, args.show)
    print(f"picture: {save}")


def _datasets(args: argparse.Namespace) -> None:
    from .data import DATASETS, find_data

    rows = []
    for spec in DATASETS.values():
        where = find_data(spec.name, args.data_dir) or "not found (downloaded on first use)"
        if spec.name == "folder":
            size, classes = "any", "from folder names"
            where = "--data-dir DIR with DIR/train/<class>/ and DIR/test/<class>/"
        else:
            size = f"{spec.channels}x{spec.image_size}x{spec.image_size}"
            classes = ", ".join(spec.classes)
            classes = classes if len(classes) < 48 else classes[:45] + "..."
        rows.append([spec.name, size, classes, where])
    print(_format_table(["dataset", "images", "classes", "data"], rows))


def _models(args: argparse.Namespace) -> None:
    from .models import count_parameters, create_model, list_models, model_info

    rows = []
    for name in list_models():
        params = count_parameters(create_model(name, num_classes=10, in_channels=3))
        rows.append([name, f"{params / 1e6:.2f}M", model_info(name)])
    print(_format_table(["model", "params (10 classes, RGB)", "blocks"], rows))


COMMANDS = {"train": _train, "eval": _eval, "predict": _predict, "datasets": _datasets, "models": _models}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `resnetlab` command. Returns the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        COMMANDS[args.command](args)
        return 0
    except UserError as e:
        print(f"resnetlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("resnetlab: interrupted.", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
