"""The command line: parses arguments and dispatches. No tensor code lives here."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import Interrupted, UserError

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
        f"{r.name}: {r.description}".replace("%", "%%") for r in RECIPES.values()))  # fmt: skip
    p.add_argument("--out", default=None, help="run folder; default: a new runs/<dataset>-<model>[-N]")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace an earlier run's files")
    p.add_argument("--resume", default=None, metavar="OUT",
                   help="continue the run in folder OUT from its last.pt, with its own settings")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 where the CPU or GPU runs it in hardware, else fp32")  # fmt: skip
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="resize images to this many pixels square; default: the dataset's own size (32 for "
                   "folders)")  # fmt: skip
    p.add_argument("--shortcut", default=None, choices=["A", "B"],
                   help="A: zero-padding, B: 1x1 projection; default: the model's")  # fmt: skip
    p.add_argument("--augment", default=None, action=argparse.BooleanOptionalAction,
                   help="random mirroring where the dataset allows, and random translation where the recipe uses "
                   "it; default: the recipe's (fast: off; best: mirroring only; paper: both)")  # fmt: skip
    p.add_argument("--subset", type=_positive_int, default=None,
                   help="train on this many training images, drawn at random (a quick try)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into OUT/tensorboard (the tensorboard extra)")  # fmt: skip

    p = sub.add_parser("eval", help="test accuracy, per-class accuracy and confusion matrix of a checkpoint",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", help="a best.pt / last.pt, a run folder, or a .onnx from resnetlab export")
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--save", default=None, help="the picture of the confusion matrix; default: "
                   "confusion_matrix.png beside the checkpoint")  # fmt: skip

    p = sub.add_parser("predict", help="predict test images (or your image files) and draw them",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", help="a best.pt / last.pt, a run folder, or a .onnx file from resnetlab export")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR",
                   help="image files or folders; default: the first N test images")  # fmt: skip
    p.add_argument("-n", type=_positive_int, default=20, help="how many test images")
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    p.add_argument("--top", type=_positive_int, default=3, help="classes listed per image file (and per image "
                   "with --json)")  # fmt: skip
    p.add_argument("--save", default=None, help="the picture of the predictions; default: "
                   "predictions.png beside the checkpoint")  # fmt: skip
    p.add_argument("--show", action="store_true", help="also open the picture in a window")
    p.add_argument("--json", action="store_true", help="print one JSON object per image and line, nothing else; "
                   "draws the picture only when --save or --show is given")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (the picture is still drawn)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])

    p = sub.add_parser("plot", help="draw a run's pictures again from its files: curves.png, "
                       "confusion_matrix.png, predictions.png", formatter_class=formatter)  # fmt: skip
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by resnetlab train")
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from; without "
                   "the test data, only curves.png is drawn")  # fmt: skip
    p.add_argument("-n", type=_positive_int, default=20, help="how many test images in predictions.png")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])

    from .export import DEFAULT_TOLERANCE, FORMATS

    p = sub.add_parser("export", help="write a checkpoint as ONNX or TorchScript for other programs, checked "
                       "against PyTorch", formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx runs with onnxruntime (the export "
                   "extra); torchscript with torch.jit.load")  # fmt: skip
    p.add_argument("-o", "--output", default=None, help="the file to write; default: beside the checkpoint, "
                   "best.onnx or best.torchscript.pt")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="test images to check the export on; default: the folder the "
                   "checkpoint was trained from (random images where there are none)")  # fmt: skip
    p.add_argument("--check-images", type=_positive_int, default=256, help="how many images to check on")
    p.add_argument("--tolerance", type=_positive_float, default=DEFAULT_TOLERANCE,
                   help="largest difference in probability from PyTorch that passes the check")  # fmt: skip
    p.add_argument("--int8", action="store_true", help="onnx only: quantize to int8 (calibrated on 1000 training "
                   "images; faster on CPUs), checked to keep the top class of 98%% of the check images")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the check's report as one JSON object")

    p = sub.add_parser("serve", help="a local web page and an HTTP API for a trained model",
                       formatter_class=formatter)  # fmt: skip
    p.add_argument("checkpoint", metavar="CKPT_OR_ONNX", help="a best.pt / last.pt, a run folder, or a .onnx file "
                   "from resnetlab export")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it to the network")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--allowed-host", action="append", default=argparse.SUPPRESS, metavar="NAME",
                   help="a host name (or address) the server answers to besides localhost and 127.0.0.1, e.g. the "
                   "machine's name; repeatable. Without it, a server on a network address (--host) answers to any "
                   "name")  # fmt: skip

    from .experiments import FULL, DegradationConfig

    quick = DegradationConfig()
    p = sub.add_parser("experiment", help="run one of the paper's experiments with resnetlab's own training")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=_Parser, required=True)
    p = experiments.add_parser("degradation", help="plain and residual nets of growing depth: training and test "
                               "error per epoch (He et al. 2015, Figures 1 and 6)")  # fmt: skip
    p.add_argument("--dataset", default=None, help=f"default: {quick.dataset}; with --full, {FULL.dataset}")
    p.add_argument("--data-dir", default="./data", help="where datasets are kept (default: ./data)")
    p.add_argument("--depths", default=None, help="comma-separated depths, each trained as plainD and resnetD; "
                   f"default: {quick.depths_text}; with --full, {FULL.depths_text}")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"default: {quick.epochs}; with --full, {FULL.epochs}")  # fmt: skip
    p.add_argument("--subset", type=_positive_int, default=None,
                   help=f"train on this many training images; default: {quick.subset}; with --full, all")  # fmt: skip
    p.add_argument("--test-subset", type=_positive_int, default=None,
                   help=f"test on this many test images; default: {quick.test_subset}; with --full, all")  # fmt: skip
    p.add_argument("--train-eval-size", type=_positive_int, default=None, help="training images on which the "
                   "training error is measured, without augmentation, after each epoch; default: "
                   f"{quick.train_eval_size}; with --full, {FULL.train_eval_size}")  # fmt: skip
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help=f"default: {quick.recipe}; with --full, {FULL.recipe}")  # fmt: skip
    p.add_argument("--augment", default=None, action=argparse.BooleanOptionalAction,
                   help="the recipe's augmentation (see train --augment) while training; default: on, whatever the "
                   "recipe")  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help=f"default: {quick.batch_size}; with --full, the recipe's (128)")  # fmt: skip
    p.add_argument("--lr", type=_positive_float, default=None, help="default: the recipe's, scaled with the batch size")
    p.add_argument("--seed", type=int, default=0, help="random seed, the same for every net (default: 0)")
    p.add_argument("--out", default=None, help="folder for the runs, degradation.png, degradation.csv and "
                   f"degradation.md; default: {quick.out}, with --full {FULL.out}")  # fmt: skip
    p.add_argument("--full", action="store_true", help="the paper's CIFAR-10 setting: 164 epochs on all 50k "
                   "images, lr 0.1 divided by 10 at half and three quarters; for a GPU")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="train again nets whose runs are already in --out")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")

    p = sub.add_parser("explain", help="Grad-CAM: which part of the image decided the class")
    p.add_argument("checkpoint", help="a best.pt / last.pt, or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_TEST_INDEX",
                   help="image files or folders, or indices into the test split (0: the first test image)")  # fmt: skip
    p.add_argument("--out", default=None, help="the picture; default: gradcam.png beside the checkpoint")
    p.add_argument("--stage", type=_positive_int, default=None,
                   help="explain the output of this stage (1: the first); default: the last")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])

    p = sub.add_parser("datasets", help="list datasets and where their data was found")
    p.add_argument("--data-dir", default="./data")
    sub.add_parser("models", help="list models with their parameter counts")
    return parser


def _train(args: argparse.Namespace) -> None:
    from .config import TrainConfig
    from .engine import resume_config, train

    if args.resume:
        config, state = resume_config(args.resume)
        train(replace(config, quiet=args.quiet or config.quiet), resume_state=state)
        return
    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, out=args.out, seed=args.seed, device=args.device,
        precision=args.precision, image_size=args.image_size, recipe=args.recipe, shortcut=args.shortcut,
        overwrite=args.overwrite, quiet=args.quiet, subset=args.subset, tensorboard=args.tensorboard,
        augment=args.augment,
    )  # fmt: skip
    train(config)


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines)


def _eval(args: argparse.Namespace) -> None:
    from .checkpoint import resolve_path
    from .inference import open_predictor
    from .plots import confusion_matrix_plot

    predictor = open_predictor(args.checkpoint, args.device, args.precision)
    data = predictor.load_test_data(args.data_dir)
    stats = predictor.evaluate(data)
    ckpt = predictor.checkpoint
    save = Path(args.save) if args.save else resolve_path(args.checkpoint).parent / "confusion_matrix.png"
    confusion_matrix_plot(stats["confusion_matrix"], predictor.classes, save,
                          f"{ckpt['model']['name']} on {ckpt['dataset']}")  # fmt: skip
    if args.json:
        out = {"checkpoint": str(args.checkpoint), "model": ckpt["model"]["name"], "dataset": ckpt["dataset"],
               "classes": predictor.classes, **stats, "picture": str(save)}  # fmt: skip
        print(json.dumps(out))
        return
    print(f"{ckpt['model']['name']} on {ckpt['dataset']} ({stats['images']} test images, "
          f"{predictor.describe()})")  # fmt: skip
    print(f"test average loss {stats['test_loss']:.4f}, accuracy {stats['test_accuracy']:.2%}, "
          f"{stats['images_per_second']:.0f} images/s\n")  # fmt: skip
    rows = [[name, sum(row), f"{acc:.2%}"] for name, row, acc in
            zip(predictor.classes, stats["confusion_matrix"], stats["per_class_accuracy"])]  # fmt: skip
    print(_format_table(["class", "images", "accuracy"], rows))
    print("\nconfusion matrix (rows: actual, columns: predicted, in class order above)")
    print(_format_table([""] + [str(i) for i in range(len(predictor.classes))],
                        [[str(i)] + [str(v) for v in row] for i, row in enumerate(stats["confusion_matrix"])]))
    print(f"\npicture: {save}")


def _top_json(top: list[tuple[str, float]]) -> list[dict]:
    return [{"class": name, "probability": round(p, 6)} for name, p in top]


def _predict(args: argparse.Namespace) -> None:
    from .checkpoint import resolve_path
    from .inference import expand_image_paths, open_predictor
    from .plots import prediction_grid

    predictor = open_predictor(args.checkpoint, args.device, args.precision)
    save = Path(args.save) if args.save else resolve_path(args.checkpoint).parent / "predictions.png"
    say = print if not (args.quiet or args.json) else lambda *a: None
    if args.images:
        paths = expand_image_paths(args.images)
        images = predictor.prepare_images(paths)
        tops = predictor.top_classes(predictor.probabilities_of_images(images), args.top)
        for path, top in zip(paths, tops):
            if args.json:
                print(json.dumps({"file": str(path), "top": _top_json(top)}))
            say(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in top))
        actual, captions = None, [path.name for path in paths]
    else:
        data = predictor.load_test_data(args.data_dir, limit=args.n)
        probabilities, labels = predictor.probabilities(data)
        tops = predictor.top_classes(probabilities, args.top)
        images, actual, captions = data.images, [predictor.classes[i] for i in labels.tolist()], None
        for i, (top, a) in enumerate(zip(tops, actual)):
            if args.json:
                print(json.dumps({"index": i, "predicted": top[0][0], "probability": round(top[0][1], 6),
                                  "actual": a, "correct": top[0][0] == a, "top": _top_json(top)}))  # fmt: skip
            say(f'predicted: "{top[0][0]}", actual: "{a}"')
        right = sum(top[0][0] == a for top, a in zip(tops, actual))
        say(f"{right} of {len(actual)} right ({right / len(actual):.0%})")
    if args.json and not (args.save or args.show):
        return
    predicted, confidence = [top[0][0] for top in tops[:100]], [top[0][1] for top in tops[:100]]
    prediction_grid(images[:100], predicted, confidence, actual[:100] if actual else None, save, args.show,
                    captions[:100] if captions else None)  # fmt: skip
    say(f"picture: {save}")


def _plot(args: argparse.Namespace) -> None:
    from .plots import redraw_run

    for line in redraw_run(args.run, args.data_dir, args.device, args.precision, args.n):
        print(line)


def _export(args: argparse.Namespace) -> None:
    from .export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.format, args.output, args.data_dir, args.check_images,
                               args.tolerance, args.int8)  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return
    size = Path(report["file"]).stat().st_size / 1e6
    print(f"wrote {report['file']} ({args.format}, {report['precision']}, {size:.1f} MB)")
    if args.int8:
        print(f"calibrated on {report['calibrated_on']}; checked on {report['checked_on']}: same top class as "
              f"PyTorch fp32 for {report['same_top_class']} of {report['images']} (at least "
              f"{report['min_agreement']:.0%} needed); largest difference {report['max_abs_diff_probabilities']:.1e} "
              "in probability")  # fmt: skip
        return
    print(f"checked on {report['checked_on']}: largest difference from PyTorch "
          f"{report['max_abs_diff_probabilities']:.1e} in probability (tolerance {report['tolerance']:.0e}), "
          f"{report['max_abs_diff_logits']:.1e} in logits; "
          f"same top class for {report['same_top_class']} of {report['images']}")  # fmt: skip


def _serve(args: argparse.Namespace) -> None:
    try:
        from .serve import serve
    except ImportError as e:
        if (e.name or "").split(".")[0] not in {"fastapi", "starlette", "pydantic", "uvicorn", "python_multipart"}:
            raise
        raise UserError(f"resnetlab serve needs the serve extra ({e.name} is missing); install it with "
                        "pip install 'resnetlab[serve]'.") from None  # fmt: skip
    serve(args.checkpoint, args.host, args.port, args.device, args.precision, getattr(args, "allowed_host", []))


def _experiment(args: argparse.Namespace) -> None:
    from .experiments import degradation_config, parse_depths, run_degradation

    given = {
        "dataset": args.dataset, "depths": parse_depths(args.depths) if args.depths else None, "epochs": args.epochs,
        "subset": args.subset, "test_subset": args.test_subset, "train_eval_size": args.train_eval_size,
        "recipe": args.recipe, "batch_size": args.batch_size, "lr": args.lr, "out": args.out,
        "augment": args.augment,
    }  # fmt: skip
    config = degradation_config(
        args.full, data_dir=args.data_dir, seed=args.seed, device=args.device, precision=args.precision,
        overwrite=args.overwrite, quiet=args.quiet, **{k: v for k, v in given.items() if v is not None},
    )  # fmt: skip
    run_degradation(config)


def _explain(args: argparse.Namespace) -> None:
    from .checkpoint import resolve_path
    from .explain import describe, explain_checkpoint, gradcam_grid

    out = Path(args.out) if args.out else resolve_path(args.checkpoint).parent / "gradcam.png"
    explanation = explain_checkpoint(args.checkpoint, args.images, args.data_dir, args.stage, args.device)
    print("\n".join(describe(explanation)))
    print(f"picture: {gradcam_grid(explanation, out)}")


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


COMMANDS = {"train": _train, "eval": _eval, "predict": _predict, "datasets": _datasets, "models": _models,
            "serve": _serve, "plot": _plot, "export": _export, "experiment": _experiment, "explain": _explain}


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
