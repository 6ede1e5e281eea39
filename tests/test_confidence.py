"""Calibrated confidence (confidence.py): the temperature fitted after training, kept in the model card, used by
eval, predict and serve; predict --min-confidence answers "unknown"."""

import json

import pytest
import torch

from resnetlab.card import ModelCard
from resnetlab.checkpoint import load_checkpoint, read_checkpoint, save_atomic
from resnetlab.cli import main
from resnetlab.confidence import calibration, expected_calibration_error, fit_temperature, reliability
from resnetlab.errors import UserError
from resnetlab.inference import TorchPredictor
from resnetlab.plots import reliability_diagram

FP32 = ["--device", "cpu", "--precision", "fp32"]


def _overconfident(scale: float, n: int = 20000, classes: int = 10, seed: int = 0):
    """Labels drawn from softmax(true logits), and logits `scale` times too sharp: the temperature that calibrates
    them is `scale`."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=generator) * 2
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=generator)[:, 0]
    return true_logits * scale, labels


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_the_fit_recovers_a_known_temperature(scale):
    logits, labels = _overconfident(scale)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(scale, rel=0.05)
    assert fit_temperature(logits, labels) == temperature  # deterministic
    report = calibration(logits, labels)
    assert report["temperature"] == temperature
    assert report["ece_after"] < 0.02 < report["ece_before"]  # too sharp or too flat: miscalibrated until scaled
    assert report["loss_after"] < report["loss_before"]


def test_reliability_bins_and_ece():
    probabilities = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    bins = reliability(probabilities, labels)
    assert len(bins) == 15 and sum(b["images"] for b in bins) == 4
    top = bins[14]  # (14/15, 1]: the two images at 0.95, one right
    assert top["images"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == pytest.approx(0.95)
    # |0.5 - 0.95| for half the images, |1 - 0.55| and |1 - 0.7| for a quarter each
    assert expected_calibration_error(bins) == pytest.approx(0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.3)
    assert fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long)) == 1.0


def test_a_card_without_a_temperature_reads_as_1_and_a_bad_one_is_refused(trained_run):
    saved = read_checkpoint(trained_run / "best.pt")
    assert saved["temperature"] != 1.0  # fitted after training
    old = {k: v for k, v in saved.items() if k != "temperature"}
    assert ModelCard.from_dict(old, "old.pt").temperature == 1.0
    for bad in (-1.0, 0, "abc", float("nan"), float("inf"), True):
        with pytest.raises(UserError, match="temperature .* not a positive number"):
            ModelCard.from_dict({**saved, "temperature": bad}, "bad.pt")


def test_an_old_checkpoint_predicts_the_plain_softmax(trained_run, tmp_path):
    saved = read_checkpoint(trained_run / "best.pt")
    save_atomic({k: v for k, v in saved.items() if k != "temperature"}, tmp_path / "old.pt")
    old = TorchPredictor.from_checkpoint(tmp_path / "old.pt", "cpu", "fp32")
    new = TorchPredictor.from_checkpoint(trained_run / "best.pt", "cpu", "fp32")
    images = new.load_test_data(limit=20).images
    logits = new.logits(images)
    assert torch.allclose(old.probabilities(images), logits.softmax(1), atol=1e-6)
    assert torch.allclose(new.probabilities(images), (logits / new.card.temperature).softmax(1), atol=1e-6)
    assert not torch.allclose(new.probabilities(images), logits.softmax(1), atol=1e-3)
    assert torch.equal(new.probabilities(images).argmax(1), logits.argmax(1))  # the answers stay the same


def test_training_fits_the_temperature_on_best_pt_and_says_so_in_the_summary(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    report = summary["calibration"]
    assert set(report) >= {"temperature", "ece_before", "ece_after", "images"} and report["images"] == 100
    assert 0 <= report["ece_after"] <= 1 and 0 <= report["ece_before"] <= 1
    assert report["loss_after"] <= report["loss_before"]
    card = load_checkpoint(trained_run / "best.pt").card
    assert card.temperature == report["temperature"] != 1.0
    assert load_checkpoint(trained_run / "last.pt").card.temperature == 1.0  # calibrated: best.pt only
    # The temperature is the one best.pt's own held-out logits call for (fp32 here, the precision training chose
    # there).
    predictor = TorchPredictor.from_checkpoint(trained_run / "best.pt", "cpu", "fp32")
    data = predictor.load_test_data()
    assert fit_temperature(predictor.logits(data.images), data.labels) == pytest.approx(card.temperature, rel=0.05)


def test_eval_reports_the_ece_before_and_after_and_draws_the_reliability_diagram(trained_run, tmp_path, capsys):
    save = tmp_path / "cm.png"
    assert main(["eval", str(trained_run), "--json", "--save", str(save), *FP32]) == 0
    result = json.loads(capsys.readouterr().out)
    report = result["calibration"]
    temperature = load_checkpoint(trained_run / "best.pt").card.temperature
    assert report["temperature"] == temperature and report["images"] == 100
    assert report["loss_after"] <= report["loss_before"]  # the temperature was fitted on these images
    assert sum(b["images"] for b in report["reliability"]["after"]) == 100
    assert result["reliability_picture"] == str(tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 10_000

    assert main(["eval", str(trained_run), "--save", str(save), *FP32]) == 0
    out = capsys.readouterr().out
    assert f"calibration: temperature {temperature:.3g} (from the model card)\n" in out
    assert (
        f"expected calibration error (15 bins, 100 images): {report['ece_before']:.2%} before, "
        f"{report['ece_after']:.2%} after\n"
    ) in out
    assert f"reliability: {tmp_path / 'reliability.png'}" in out


def test_reliability_diagram_draws_both_sides(tmp_path):
    logits, labels = _overconfident(3.0, n=500)
    path = reliability_diagram(calibration(logits, labels, with_bins=True), tmp_path / "r.png", "title")
    assert path.stat().st_size > 10_000


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_predict_min_confidence_answers_unknown(trained_run, tmp_path, capsys):
    predictor = TorchPredictor.from_checkpoint(trained_run / "best.pt", "cpu", "fp32")
    top = predictor.probabilities(predictor.load_test_data(limit=20).images).max(1).values
    threshold = float(top.median())  # half the images below it
    below = (top < threshold).tolist()
    assert 0 < sum(below) < 20
    picture = tmp_path / "p.png"
    args = ["predict", str(trained_run), "-n", "20", "--min-confidence", str(threshold), *FP32]
    assert main([*args, "--json", "--save", str(picture)]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert [r["unknown"] for r in records] == below
    for record, unknown in zip(records, below):
        assert record["predicted"] == ("unknown" if unknown else record["top"][0]["class"])
        assert not (unknown and record["correct"])
    assert picture.stat().st_size > 10_000

    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum('predicted: "unknown" (' in line for line in lines) == sum(below)
    assert f"{sum(below)} unknown (top probability below {threshold:.1%})" in lines[-2]


def test_predict_min_confidence_on_image_files(trained_run, tmp_path, capsys):
    from fakedata import pattern_images
    from PIL import Image

    for label in range(3):
        Image.fromarray(pattern_images([label], 28, 1, seed=label)[0, :, :, 0]).save(tmp_path / f"{label}.png")
    args = ["predict", str(trained_run), str(tmp_path), "--json", *FP32]
    assert main([*args, "--min-confidence", "0.9999999"]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert all(r["unknown"] and r["class"] == "unknown" for r in records) and len(records) == 3
    assert main([*args, "--min-confidence", "0"]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert all(not r["unknown"] and r["class"] == r["top"][0]["class"] for r in records)
    assert main([*args]) == 0
    assert all("unknown" not in r for r in _json_lines(capsys.readouterr().out))  # only asked for
    assert main(["predict", str(trained_run), str(tmp_path), "--min-confidence", "0.9999999", *FP32]) == 0
    assert all(": unknown (below 100.0%: " in line for line in capsys.readouterr().out.splitlines()[:3])


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan", "abc"])
def test_a_min_confidence_outside_0_to_1_is_one_sentence(trained_run, capsys, value):
    assert main(["predict", str(trained_run), "--min-confidence", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetlab: error: argument --min-confidence: ") and err.count("\n") == 1
    assert "Traceback" not in err
