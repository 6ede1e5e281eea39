"""Every table of the READMEs' Results, measured again on the machine this runs on, with one command.

    make bench                                            # all of them: many hours on 2 cores
    python benchmarks/results.py --tables latency inference
    python benchmarks/results.py --list

Each table is one or more benchmark scripts, with the arguments that measured the README's rows, run one after
another in processes of their own (never two at once: on 2 cores they slow each other far more than 2x). Each
script writes its JSON (with the machine) into --out and prints its markdown rows; this writes
results-DATE.json (the machine: CPU model and flags, cores, torch, precision; each table's commands, output and
seconds) and prints every table under one heading that names the machine. The READMEs show one machine per
table; figures of other machines stay in benchmarks/README.md, labelled.

The inference and latency tables run on the Fashion-MNIST default's best.pt from the fashion-mnist table (--run
names another); --data-dir is where Fashion-MNIST is (`make data` installs Debian's copy), --cifar-dir the
CIFAR-10 batches (benchmarks/cifar_jpegs_to_batches.py makes them from the JPEG folder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from machine import machine_info  # noqa: E402


@dataclass(frozen=True)
class Table:
    title: str
    commands: tuple[str, ...]  # a script and its arguments; {data}, {cifar}, {out}, {run} filled in


TABLES: dict[str, Table] = {
    "fashion-mnist": Table(
        "Fashion-MNIST: the tutorial's recipe (a quarter epoch, extrapolated) beside the default, to 89.57%",
        ("time_to_accuracy.py --data-dir {data} --tutorial-epochs 0.25 --recipes default --out {out}",),
    ),
    "fashion-mnist-95": Table(
        "Fashion-MNIST toward 95%",
        (
            "time_to_accuracy.py --data-dir {data} --tutorial-epochs 0 --recipes photo-long --long-epochs 16 "
            "--model resnet9 --tag _resnet9_photo-long --out {out}",
            "time_to_accuracy.py --data-dir {data} --tutorial-epochs 0 --recipes airbench --epochs 17 "
            "--tag _airbench-17 --out {out}",
        ),
    ),
    "inference": Table(
        "Inference on 10,000 Fashion-MNIST test images: the tutorial's loop, eval, ONNX and int8",
        ("inference.py {run} --images 10000 --tutorial-images 1000 --repeats 3 --out {out}",),
    ),
    "latency": Table(
        "One photo from the shell, cold: a checkpoint and its .onnx export",
        ("predict_latency.py {run} --repeats 7",),
    ),
    "cifar10": Table(
        "CIFAR-10 (JPEG copies): the default, and the paper's 91.25%",
        (
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes default --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes fast --model resnet20 "
            "--tag _resnet20-fast --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes photo-long --long-epochs 14 "
            "--model resnet9 --tag _photo-long-14 --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes photo-long --long-epochs 28 "
            "--model resnet9 --tag _photo-long-28 --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes airbench --epochs 15 "
            "--tag _airbench-15 --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes airbench --epochs 18 "
            "--tag _airbench-18 --out {out}",
            "time_to_accuracy.py --dataset cifar10 --data-dir {cifar} --recipes airbench --epochs 16 --tta translate "
            "--eval-every 8 --tag _airbench-16 --out {out}",
        ),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    parser.add_argument("--list", action="store_true", help="list the tables and their commands, run nothing")
    parser.add_argument("--data-dir", default="./data", help="Fashion-MNIST")
    parser.add_argument("--cifar-dir", default="./data", help="CIFAR-10 (torchvision's batches)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--run", default=None, help="the checkpoint of the inference and latency tables; default: the default's"
    )
    args = parser.parse_args()
    out = Path(args.out)
    run = args.run or str(out / "runs" / "fashion-mnist-default" / "best.pt")
    fill = {"data": args.data_dir, "cifar": args.cifar_dir, "out": str(out), "run": run}
    if args.list:
        for name, table in TABLES.items():
            print(f"{name}: {table.title}")
            for command in table.commands:
                print("    python benchmarks/" + command.format(**fill))
        return
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    record = {"machine": machine, "tables": {}}
    path, failed = out / f"results-{datetime.date.today().isoformat()}.json", []
    for name in args.tables:
        for command in TABLES[name].commands:
            script, *rest = command.split()
            arguments = [sys.executable, str(HERE / script), *(part.format(**fill) for part in rest)]
            print("running", " ".join(arguments[1:]), flush=True)
            start = time.perf_counter()
            child = subprocess.run(arguments, capture_output=True, text=True)
            result = {"command": arguments[1:], "seconds": time.perf_counter() - start, "output": child.stdout}
            if child.returncode:  # recorded, and the other tables still run
                failed.append(name)
                result["failed"] = child.stderr[-3000:]
                print(f"{script} failed:\n{result['failed']}", file=sys.stderr, flush=True)
            record["tables"].setdefault(name, []).append(result)
            path.write_text(json.dumps(record, indent=2))  # after each command: a stopped run keeps what it measured
    flags = ", ".join(machine["cpu_flags"]) or "none of " + "/".join(("AVX2", "AVX-512"))
    print(
        f"\n## Results on {machine['cpu']}, {machine['cores']} cores ({flags}), torch {machine['torch']}, "
        f"bf16 in hardware: {'yes' if machine['hardware_bf16'] else 'no'}, {machine['date']}\n"
    )
    for name, runs in record["tables"].items():
        print(f"### {TABLES[name].title}\n")
        for result in runs:
            print(result["output"].strip() + "\n")
    print(f"(all figures in {path})")
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (their errors above and in {path})")


if __name__ == "__main__":
    main()
