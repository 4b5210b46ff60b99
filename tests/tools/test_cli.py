"""The command-line tools: train.py and eval.py on a tiny real run, and their errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.engine.checkpoint import load_checkpoint
from tool_loader import load_tool as _tool  # noqa: E402

BCCD = (Path(__file__).resolve().parents[2] / "../shared/data/bccd").resolve()  # where data/bccd.yaml points
TINY = ["data.max_images=2", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.epochs=1",
        "eval.batch_size=2"]


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


def test_no_progress_prints_one_line_per_epoch_and_resume_extends_the_schedule(tmp_path, capsys):
    """2 epochs, then --resume --set train.epochs=3. lr0 0.01, lrf 0.01, linear, no warm-up: the rate of epoch e
    (0-based) of an E-epoch run is 0.01 * ((1 - e / E) * 0.99 + 0.01). Epoch 2 (e=1) trained as planned for E=2:
    0.01 * 0.505 = 0.00505; epoch 3 (e=2) follows the 3-epoch run: 0.01 * (0.99 / 3 + 0.01) = 0.0034."""
    run = tmp_path / "run"
    tiny = [*TINY[:-2], "train.epochs=2", "train.eval_interval=2", "train.warmup_epochs=0", "eval.batch_size=2"]
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--run-dir", str(run), "--no-progress", "--set", *tiny]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "lbox" in lines[0] and "mAP50" not in lines[0] and "mAP50-95" in lines[1]  # evaluated at epoch 2 only

    assert _tool("train").main(["--resume", str(run / "last.pt"), "--no-progress", "--set", "train.epochs=3"]) == 0
    assert [ln.split("  ")[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")] == ["epoch 3/3"]
    history = [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["lr"] == pytest.approx([0.00505] * 3) and history[2]["lr"] == pytest.approx([0.0034] * 3)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["train"]["epochs"] == 3
    assert _tool("train").main(["--resume", str(run / "last.pt"), "--set", "train.epochs=2"]) == 2
    assert "already trained 3 epochs" in capsys.readouterr().err


def test_resume_refuses_overrides_that_would_not_fit_the_checkpoint(trained_run, capsys):
    assert _tool("train").main(["--resume", str(trained_run / "last.pt"), "--set", "model.size=s"]) == 2
    err = capsys.readouterr().err
    assert "model.size" in err and "train.epochs" in err and "--weights" in err


def test_weights_start_a_new_run_at_epoch_zero(trained_run, tmp_path):
    run = tmp_path / "from_weights"
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--weights", str(trained_run / "last.pt"), "--run-dir",
                                str(run), "--no-progress", "--set", *TINY]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 0


def test_weights_that_are_a_text_file_are_named(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("model: yolov5\n")
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--weights", str(notes), "--run-dir", str(tmp_path / "r"),
                                "--no-progress", "--set", *TINY]) == 2
    err = capsys.readouterr().err
    assert str(notes) in err and "not a torch checkpoint" in err and "weights_only" not in err
