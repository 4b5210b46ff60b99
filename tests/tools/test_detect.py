"""tools/detect.py and detector/inference.py: detections on image files from a checkpoint.

The anchor: at the run's own thresholds, the detections of an image file equal the ones evaluation scores that
image with (``detections.json``, from the dataset loader), boxes in the file's pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import build
from detector.config import config_from_dict
from detector.engine.checkpoint import load_checkpoint, save_checkpoint
from detector.engine.evaluate import evaluate
from detector.errors import DatasetError
from detector.inference import draw_detections, image_files, load_predictor, read_images, yolo_lines
from tool_loader import load_tool as _tool  # noqa: E402

# eval.conf_thres 0: every candidate of the barely trained model is a detection (up to max_det 50 per image)
TINY = ["data.max_images=3", "data.img_size=96", "data.workers=0", "train.batch_size=3", "train.epochs=1",
        "eval.batch_size=3", "eval.conf_thres=0", "eval.max_det=50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert _tool("train").main(["--cfg", "yolov5_ciou", "--run-dir", str(run_dir), "--no-progress", "--set", *TINY]) == 0
    return run_dir


def _dataset(run_dir: Path):
    cfg = config_from_dict(load_checkpoint(run_dir / "last.pt")["config"])
    return build.build_dataset(cfg, cfg.eval.split)


@pytest.fixture(scope="module")
def spread_checkpoint(trained_run) -> Path:
    """The run's checkpoint with random head outputs (weights N(0, 0.05), biases N(0, 1)): after one epoch every
    score is about the same, and near-ties would make the comparison below depend on the last bits."""
    ckpt = load_checkpoint(trained_run / "last.pt")
    g = torch.Generator().manual_seed(0)
    for key in ("model", "ema"):
        for name, t in ckpt[key].items():
            if name.startswith("head.convs."):
                std, mean = (0.05, 0.0) if name.endswith("weight") else (1.0, 0.0)
                ckpt[key][name] = torch.randn(t.shape, generator=g) * std + mean
    return save_checkpoint(trained_run / "spread.pt", ckpt)


def test_detections_of_the_files_equal_the_evaluation(spread_checkpoint, tmp_path):
    """tools/detect.py's path (file -> letterbox -> predict -> file pixels) against evaluation's (dataset loader,
    detections.json), on the same model and images."""
    predictor = load_predictor(spread_checkpoint)
    cfg = predictor.cfg
    dataset = build.build_dataset(cfg, cfg.eval.split)
    evaluate(predictor.model, predictor.coder, build.build_loader(cfg, dataset, train=False), dataset, cfg.eval,
             predictor.device, progress=False, detections_path=tmp_path / "detections.json")
    saved = json.loads((tmp_path / "detections.json").read_text())
    paths = [Path(r.path) for r in dataset.records]
    for record, dets in zip(dataset.records, predictor(read_images(paths))):
        expected = [d for d in saved["detections"] if d["image_id"] == record.image_id]
        assert len(dets) == len(expected) == 50
        got = np.concatenate((dets[:, :2], dets[:, 2:4] - dets[:, :2], dets[:, 4:5],  # xywh, score, COCO id
                              np.asarray([[dataset.cat_ids[int(c)]] for c in dets[:, 5]])), axis=1)
        want = np.asarray([[*d["bbox"], d["score"], d["category_id"]] for d in expected])  # (k, 6)
        scale = np.asarray([1, 1, 1, 1, 1e4, 1e4])  # a class or score difference outweighs any box difference
        pair = np.abs((got * scale)[:, None] - (want * scale)[None]).max(-1).argmin(1)  # nearest expected row
        assert len(set(pair.tolist())) == len(pair)  # one to one
        np.testing.assert_allclose(got[:, :4], want[pair, :4], atol=0.02)  # boxes in the file's pixels
        np.testing.assert_allclose(got[:, 4], want[pair, 4], rtol=1e-4, atol=1e-7)
        assert np.array_equal(got[:, 5], want[pair, 5])


def test_cli_writes_images_json_and_yolo_labels(trained_run, tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    paths = [Path(r.path) for r in _dataset(trained_run).records[:2]]
    for p in paths:
        (source / p.name).write_bytes(p.read_bytes())
    (source / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    out = tmp_path / "out"
    argv = ["--weights", str(trained_run / "last.pt"), "--source", str(source), "--out", str(out), "--device", "cpu",
            "--conf-thres", "0", "--save-txt", "--batch-size", "1"]
    assert _tool("detect").main(argv) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in records] == sorted(p.name for p in paths)
    for r, p in zip(records, sorted(paths)):
        drawn = cv2.imread(str(out / p.name))
        assert drawn.shape == cv2.imread(str(p)).shape  # the file's own pixels, not the network input
        lines = (out / "labels" / f"{p.stem}.txt").read_text().splitlines()
        assert len(lines) == len(r["detections"]) == 50
        first = [float(v) for v in lines[0].split()]
        assert int(first[0]) == r["detections"][0]["class"] and first[5] == pytest.approx(r["detections"][0]["score"],
                                                                                          abs=1e-5)


def test_missing_and_empty_sources_are_named(tmp_path, trained_run, capsys):
    with pytest.raises(DatasetError, match="no such file or folder"):
        image_files(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no image files"):
        image_files(tmp_path)
    assert _tool("detect").main(["--weights", str(trained_run / "last.pt"), "--source", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        read_images([broken])


def test_drawing_and_yolo_lines_by_hand():
    """A 100 x 200 (h x w) image, one box (20, 10)-(60, 50) of class 1 at 0.5: the YOLO line is
    1, cx 40/200, cy 30/100, w 40/200, h 40/100, 0.5; the box's left edge takes class 1's colour."""
    image = np.zeros((100, 200, 3), np.uint8)
    dets = np.asarray([[20, 10, 60, 50, 0.5, 1]], np.float32)
    assert yolo_lines(dets, image.shape) == ["1 0.200000 0.300000 0.200000 0.400000 0.50000"]
    from detector.inference import class_colour

    drawn = draw_detections(image, dets, ["a", "b"])
    assert tuple(drawn[30, 20]) == class_colour(1) and image.max() == 0  # a BGR copy; the input is untouched


def test_an_image_size_off_the_stride_is_a_config_error(trained_run, tmp_path, capsys):
    """--img-size goes through the config's own checks (as a --set item would), for detect.py and eval.py alike."""
    argv = ["--weights", str(trained_run / "last.pt"), "--img-size", "300"]
    image = Path(_dataset(trained_run).records[0].path)
    assert _tool("detect").main([*argv, "--source", str(image), "--out", str(tmp_path / "p")]) == 2
    assert _tool("eval").main([*argv, "--out", str(tmp_path / "e.json")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: --set data.img_size=300: data.img_size: 300 is not a multiple of 32"] * 2
    assert not (tmp_path / "p").exists()
