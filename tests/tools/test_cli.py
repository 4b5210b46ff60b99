"""The command-line tools: train.py and eval.py on a tiny real run, and their errors for bad input."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from detector.engine.checkpoint import load_checkpoint

TOOLS = Path(__file__).resolve().parents[2] / "tools"
BCCD = (Path(__file__).resolve().parents[2] / "../shared/data/bccd").resolve()  # where data/bccd.yaml points
TINY = ["data.max_images=2", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.epochs=1",
        "eval.batch_size=2"]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--run-dir", str(run_dir), "--no-progress", "--set", *TINY]) == 0
    return run_dir


def test_train_writes_the_run_directory(trained_run):
    for name in ("config.yaml", "last.pt", "best.pt", "results.json", "history.jsonl"):
        assert (trained_run / name).is_file(), name
    ckpt = load_checkpoint(trained_run / "last.pt")
    assert ckpt["num_classes"] == 80 and ckpt["epoch"] == 0


def test_eval_of_the_checkpoint_reproduces_the_training_evaluation(trained_run, tmp_path):
    out = tmp_path / "eval.json"
    assert _tool("eval").main(["--weights", str(trained_run / "last.pt"), "--device", "cpu", "--out", str(out)]) == 0
    evaluated = json.loads(out.read_text())["stats"]
    trained = json.loads((trained_run / "results.json").read_text())["stats"]
    assert evaluated == pytest.approx(trained)


@pytest.mark.skipif(not BCCD.is_dir(), reason=f"needs the BCCD dataset at {BCCD} (../shared beside the repository)")
def test_eval_refuses_a_dataset_with_other_classes(trained_run, capsys):
    assert _tool("eval").main(["--weights", str(trained_run / "last.pt"), "--data", "bccd"]) == 2
    assert "3 classes" in capsys.readouterr().err


def test_train_reports_a_config_typo_with_file_key_and_suggestion(capsys):
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "epochs" in err


def test_eval_reports_a_missing_checkpoint(tmp_path, capsys):
    assert _tool("eval").main(["--weights", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
