"""Inference speed: the tutorial's one-image-at-a-time loop beside resnetlab's ways to evaluate, in one run.

    python benchmarks/inference.py CKPT [--images 10000] [--repeats 5]

CKPT is a Fashion-MNIST resnetlab checkpoint (e.g. from `resnetlab train`). Each way is timed --repeats times
on the same test images, interleaved, and reported as the median images/s and its ratio to the tutorial's loop.
Also: the time a single `resnetlab predict CKPT IMAGE` takes from the shell, split into its parts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import predict_latency  # noqa: E402
from machine import forward_flops, machine_info, matmul_peak_gflops  # noqa: E402

ACCURACY: dict[str, float] = {}  # test accuracy of the exported models, on the benchmark's images


def _timed(fn, images: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(images)
    return len(images) / (time.perf_counter() - start)


def ways(checkpoint: Path, images: torch.Tensor, test_data) -> dict:
    """name -> function(uint8 images) running the model over them."""
    import tutorial_recipe

    from resnetlab.inference import TorchPredictor
    from resnetlab.preprocess import PixelClassifier

    predictor = TorchPredictor.from_checkpoint(checkpoint, device="cpu", precision="fp32")
    card = predictor.card
    tutorial = tutorial_recipe.TutorialNet().eval()

    def tutorial_loop(x):
        tutorial_recipe.one_at_a_time(tutorial, x.float() / 255)

    def batched(network, batch=1000, channels_last=True, dtype=None):
        """The network fed normalized input (no test-time flip), `batch` images per forward pass."""
        network = network.eval()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        classifier = PixelClassifier(network, card.mean, card.std, memory_format=memory_format).eval()

        @torch.no_grad()
        def run(x):
            for i in range(0, len(x), batch):
                if dtype is None:
                    classifier(x[i : i + batch]).argmax(1)
                else:
                    with torch.autocast("cpu", dtype=dtype):
                        classifier(x[i : i + batch]).argmax(1)

        return run

    unfolded = predictor.checkpoint.build_model()
    name = card.architecture
    # TorchPredictor.evaluate, as `resnetlab eval` runs it, at 500 images per forward pass as in the figures so far
    # (the command's own chunk is inference.CHUNK_SIZE).
    predictor.chunk_size = 500

    def resnetlab_eval(x):
        data = replace(test_data, pixels=x, rows=None, labels=test_data.labels[: len(x)], files=())
        predictor.evaluate(data)

    result = {
        "tutorial loop (1 image at a time, fp32)": tutorial_loop,
        f"eager {name}, batch 500, NCHW, BN not folded": batched(unfolded, 500, False),
        f"`resnetlab eval` ({name}, BN folded, channels_last, batch 500)": resnetlab_eval,
    }
    try:
        compiled = torch.compile(predictor.network)
        runner = batched(compiled, 1000, True)
        runner(images[:1000])  # compile outside the timing
        result["+ torch.compile (inductor), batch 1000"] = runner
    except Exception as e:  # noqa: BLE001 - a benchmark reports what does not work here
        print(f"torch.compile unavailable: {e}", file=sys.stderr)
    try:
        import onnxruntime as ort

        from resnetlab.export import export_checkpoint
        from resnetlab.inference import OnnxPredictor

        folder = Path(tempfile.mkdtemp())
        onnx_path, int8_path = folder / "model.onnx", folder / "model.int8.onnx"
        export_checkpoint(checkpoint, "onnx", onnx_path)
        export_checkpoint(checkpoint, "onnx", int8_path, int8=True)

        def onnx_runner(path):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def run(x):
                for i in range(0, len(x), 1000):
                    session.run(None, {"images": x[i : i + 1000].numpy()})

            return run

        result["onnxruntime (exported, batch 1000)"] = onnx_runner(onnx_path)
        result["onnxruntime int8 (`resnetlab export --int8`, batch 1000)"] = onnx_runner(int8_path)
        for name, path in (("onnxruntime fp32", onnx_path), ("onnxruntime int8", int8_path)):
            ACCURACY[name] = OnnxPredictor.from_file(path).evaluate(test_data)["accuracy"]
    except Exception as e:  # noqa: BLE001
        print(f"onnxruntime unavailable: {e}", file=sys.stderr)
    from resnetlab.runtime import cpu_has_fast_bf16

    if cpu_has_fast_bf16():
        result["+ bf16 autocast (AMX/AVX512_BF16)"] = batched(predictor.network, 1000, True, torch.bfloat16)
    return result


def single_image_latency(checkpoint: Path, image: Path, repeats: int) -> dict:
    """Wall time of the whole `resnetlab predict CKPT IMAGE` command, and of importing torch alone."""
    python = sys.executable
    commands = {
        "python -c 'import torch'": [python, "-c", "import torch"],
        "python -c 'import torch, torchvision'": [python, "-c", "import torch, torchvision"],
        **predict_latency.predict_commands(checkpoint, image),
    }
    return predict_latency.latency(commands, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--tutorial-images", type=int, default=1000, help="the slow loop runs on fewer images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from resnetlab.inference import TorchPredictor

    data = TorchPredictor.from_checkpoint(args.checkpoint, device="cpu").load_test_data(limit=args.images)
    images = data.images
    runners = ways(args.checkpoint, images, data)
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            x = images[: args.tutorial_images] if name.startswith("tutorial") else images
            speeds[name].append(_timed(fn, x))
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    baseline = medians["tutorial loop (1 image at a time, fp32)"]

    from PIL import Image

    image_path = Path(tempfile.mkdtemp()) / "image.png"
    Image.fromarray(images[0, 0].numpy()).save(image_path)
    latency = single_image_latency(args.checkpoint, image_path, args.repeats)

    info = machine_info()
    info["peak_gflops"] = peak = matmul_peak_gflops()
    import tutorial_recipe

    from resnetlab.checkpoint import load_checkpoint

    shape = tuple(images.shape[1:])
    flops = forward_flops(load_checkpoint(args.checkpoint).build_model(), shape)
    tutorial_flops = forward_flops(tutorial_recipe.TutorialNet(), shape)
    lines = [
        f"| way | images/s (median of {args.repeats}) | vs tutorial loop | GFLOP/s | of peak |",
        "|---|---|---|---|---|",
    ]
    for name, speed in medians.items():
        gflops = speed * (tutorial_flops if name.startswith("tutorial") else flops) / 1e9
        lines.append(f"| {name} | {speed:,.0f} | {speed / baseline:.1f}x | {gflops:.1f} | {gflops / peak:.0%} |")
    lines += [
        "",
        f"Forward pass: {flops / 1e6:.1f} MFLOP per image ({tutorial_flops / 1e6:.0f} for the tutorial's net); "
        f"peak {peak:.0f} GFLOP/s (4096x4096 fp32 matmul). At that peak the checkpoint's model could run at most "
        f"{peak * 1e9 / flops:,.0f} images/s, {peak * 1e9 / flops / baseline:.0f}x the tutorial loop.",
    ]
    if ACCURACY:
        lines += [
            "",
            "Test accuracy on the same images: " + ", ".join(f"{k} {v:.2%}" for k, v in ACCURACY.items()) + ".",
        ]
    lines += ["", "| single image, whole command | seconds (median) |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in latency.items()]
    lines += [
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} threads, "
        f"hardware bf16: {info['hardware_bf16']}; {info['date']}.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(
        json.dumps(
            {
                "machine": info,
                "images_per_second": speeds,
                "medians": medians,
                "latency": latency,
                "accuracy": ACCURACY,
            },
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
