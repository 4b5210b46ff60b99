"""The start of a run (detector/engine/start.py): the dataset check before the first epoch, the config of a
resumed run, and a new run from a checkpoint's weights.

The faulty dataset is a copy of four coco128 images with YOLO labels, with faults injected: a class 999 and a
``nan`` field in one label file, and a zero-byte image (which only its header read finds, before training).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from detector.config import config_to_dict, load_config
from detector.engine import trainer
from detector.engine.checkpoint import CheckpointError, save_checkpoint
from detector.engine.start import check_training_data, class_difference, load_weights, resume_config
from detector.errors import ConfigError, DatasetError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
NAMES = yaml.safe_load((COCO128.parent / "coco128_yolo.yaml").read_text())["names"]
TINY = ["data.max_images=4", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=2", "eval.batch_size=4"]


def _yolo_copy(root: Path, n: int = 4) -> tuple[Path, list[Path], list[Path]]:
    """The first ``n`` coco128 images and their labels under ``root``; returns (data.yaml, images, labels)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    images, labels = [], []
    for src in sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:n]:
        label = COCO128 / "labels" / "train2017" / f"{src.stem}.txt"
        images.append(Path(shutil.copy(src, root / "images" / src.name)))
        labels.append(Path(shutil.copy(label, root / "labels" / label.name)))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"format": "yolo", "path": ".", "train": "images", "val": "images",
                                    "names": NAMES}))
    return data, images, labels


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _never_train(*args, **kwargs):
    raise AssertionError("train_one_epoch ran although the data check should have stopped the run")


def test_faulty_dataset_stops_the_run_before_epoch_one_listing_every_problem(tmp_path, monkeypatch, capsys):
    data, images, labels = _yolo_copy(tmp_path / "faulty")
    lines = labels[0].read_text().splitlines()
    labels[0].write_text("\n".join(["999 0.5 0.5 0.2 0.2", "0 nan 0.5 0.2 0.2"] + lines) + "\n")  # lines 1, 2
    images[1].write_bytes(b"")  # zero-byte image: its label parses, only the header read finds it
    monkeypatch.setattr(trainer, "train_one_epoch", _never_train)
    cfg = load_config("yolov5_ciou", TINY + [f"data.dataset={data}"])
    with pytest.raises(DatasetError) as info:
        trainer.fit(cfg, run_dir=tmp_path / "run", progress=False)
    message = str(info.value)
    assert f"{labels[0]}:1:" in message and "999" in message
    assert f"{labels[0]}:2:" in message
    assert str(images[1]) in message
    assert "3 problem(s)" in message
    assert not (tmp_path / "run").exists()  # nothing written: the run never started


def test_clean_dataset_passes_and_the_second_check_reads_headers_from_the_cache(tmp_path, capsys):
    data, images, _ = _yolo_copy(tmp_path / "clean")
    cfg = load_config("yolov5_ciou", TINY + [f"data.dataset={data}"])
    cache = str(tmp_path / "headers.json")
    report, val = check_training_data(cfg, cache_path=cache)
    assert report.images == 4 and not report.fatal
    assert val.same_as == "train"  # the same files: read once
    from detector.data.check import HeaderCache

    hits = HeaderCache(cache)
    check_training_data(cfg, cache_path=None)  # default path under XDG_CACHE_HOME
    assert list((tmp_path / "cache" / "detector" / "check_data").glob("*.json"))
    for image in images:
        hits.header(str(image))
    assert hits.hits == 4  # every header came from the cache written by the first check


def test_warnings_are_printed_once_and_do_not_stop_the_run(tmp_path, capsys):
    data, _, labels = _yolo_copy(tmp_path / "orphan")
    orphan = labels[0].with_name("no_such_image.txt")
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    cfg = load_config("yolov5_ciou", TINY + [f"data.dataset={data}"])
    check_training_data(cfg)
    out = capsys.readouterr().out
    assert out.count(f"warning: {orphan}") == 1


def test_resume_config_accepts_only_keys_that_leave_the_checkpoint_valid():
    stored = config_to_dict(load_config("yolov5_ciou", TINY))
    cfg = resume_config(stored, ["train.epochs=5", "data.workers=1"], source="last.pt")
    assert cfg.train.epochs == 5 and cfg.data.workers == 1 and stored["train"]["epochs"] == 2  # stored untouched
    with pytest.raises(ConfigError, match="model.size.*only train.epochs"):
        resume_config(stored, ["model.size=s"], source="last.pt")
    with pytest.raises(ConfigError, match="train.epochs"):
        resume_config(stored, ["train.epochs=0"], source="last.pt")


def _weights_file(tmp_path, names, model) -> Path:
    return save_checkpoint(tmp_path / "w.pt", {"model": model.state_dict(), "ema": None, "names": names})


def test_load_weights_copies_the_weights_and_refuses_other_classes(tmp_path):
    torch.manual_seed(0)
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    path = _weights_file(tmp_path, ["cat", "dog"], source)
    load_weights(target, path, ["cat", "dog"])
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)
    with pytest.raises(CheckpointError, match=r"class order differs.*0: 'cat' vs 'dog', 1: 'dog' vs 'cat'"):
        load_weights(target, path, ["dog", "cat"])
    with pytest.raises(CheckpointError, match=r"2 classes in the checkpoint, 3 in the dataset.*only in the dataset: \['cow'\]"):
        load_weights(target, path, ["cat", "dog", "cow"])
    with pytest.raises(CheckpointError, match=r"does not fit.*weight \(2, 3\) vs \(4, 3\)"):
        load_weights(nn.Linear(3, 4), path, ["cat", "dog"])


def test_class_difference_names_what_is_only_on_one_side():
    assert class_difference(["a", "b"], ["a"]) == "2 classes in the checkpoint, 1 in the dataset; only in the checkpoint: ['b']"


class _Stop(Exception):
    pass


def test_fit_from_weights_starts_at_epoch_zero_with_the_checkpoints_ema_weights(tmp_path, monkeypatch):
    """A 1-epoch run writes last.pt; a new run from it starts (first train_one_epoch call) with exactly the stored
    EMA weights, epoch 0 and an optimizer without state."""
    cfg = load_config("yolov5_ciou", TINY + ["train.epochs=1"])
    trainer.fit(cfg, run_dir=tmp_path / "first", progress=False)
    stored = torch.load(tmp_path / "first" / "last.pt", weights_only=True)
    seen = {}

    def record(model, criterion, loader, optimizer, scaler, ema, device, epoch, *args, **kwargs):
        seen.update(state={k: v.clone() for k, v in model.state_dict().items()}, epoch=epoch,
                    optimizer_state=len(optimizer.state), ema=ema.module.state_dict())
        raise _Stop

    monkeypatch.setattr(trainer, "train_one_epoch", record)
    with pytest.raises(_Stop):
        trainer.fit(cfg, run_dir=tmp_path / "second", weights=tmp_path / "first" / "last.pt", progress=False)
    assert seen["epoch"] == 0 and seen["optimizer_state"] == 0
    for name, tensor in stored["ema"].items():
        assert torch.equal(seen["state"][name], tensor), name
        assert torch.equal(seen["ema"][name], tensor), name
