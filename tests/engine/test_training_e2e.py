"""End-to-end checks of the training loop on real coco128 images.

* resume: a run stopped after its first epoch and resumed from ``last.pt`` ends with exactly the same
  weights (model and EMA) as the same run left uninterrupted, on the CPU.
* learning: yolov5n trained from scratch on a handful of coco128 images, without augmentation, memorises
  them (COCO mAP50 on those same images >= 0.5). The CI form is short; ``-m slow`` runs a longer one.
"""
from __future__ import annotations

import pytest
import torch

from detector.config import load_config
from detector.engine.checkpoint import load_checkpoint
from detector.engine.trainer import fit, read_history

NO_AUGMENT = [f"augment.{k}=0" for k in ("mosaic", "fliplr", "hsv_h", "hsv_s", "hsv_v", "translate", "scale")]


class StopAfterFirstEpoch(Exception):
    pass


def _stop_after_first_epoch(epoch: int, metrics: dict) -> None:
    if epoch == 0:
        raise StopAfterFirstEpoch


# Stateful losses (WIoU v3's running mean, GHM-C's histogram), with a large momentum so that their state moves a lot.
STATEFUL_LOSSES = ["loss.box={name: wiou, momentum: 0.5}", "loss.cls={name: ghm, momentum: 0.5}"]


@pytest.mark.parametrize("preset,workers,losses", [("yolov5_ciou", 0, []), ("yolov5_ciou", 2, []), ("rpn", 0, []),
                                                   ("yolov5_ciou", 0, STATEFUL_LOSSES)])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, preset, workers, losses):
    # Mosaic, affine, HSV and flips stay on: the augmentation randomness must be reproduced too, in worker
    # processes as well. The resumed run starts epoch 2 with fresh workers where the uninterrupted run keeps its
    # persistent ones; close_mosaic=1 then rebuilds the loader without mosaic for epoch 3 in both. The rpn preset's
    # random sampler draws from torch's generator, which the trainer re-seeds per epoch: resumed draws match too.
    # Stateful losses resume from the checkpoint's "criterion" state.
    cfg = load_config(preset, [
        "data.max_images=4", "data.img_size=64", f"data.workers={workers}", "train.batch_size=2", "train.nbs=2",
        "train.close_mosaic=1",
        "train.epochs=3", "train.eval_interval=3", "train.warmup_epochs=0.5", "eval.batch_size=4",
    ] + losses)
    fit(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(StopAfterFirstEpoch):
        fit(cfg, run_dir=tmp_path / "stopped", on_epoch_end=_stop_after_first_epoch, progress=False)
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["epoch"] == 0
    fit(cfg, resume=tmp_path / "stopped" / "last.pt", progress=False)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert straight["epoch"] == resumed["epoch"] == 2
    for key in ("model", "ema"):
        assert straight[key].keys() == resumed[key].keys()
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    # The per-epoch history of the resumed run has each epoch once, like the uninterrupted run's.
    assert [r["epoch"] for r in read_history(tmp_path / "stopped" / "history.jsonl")] == [1, 2, 3]
    assert read_history(tmp_path / "stopped" / "history.jsonl")[-1]["coco"] == straight["metrics"]["coco"]
    # The stopped run really did change between its first and second epoch.
    assert straight["ema_updates"] == resumed["ema_updates"] > 0
    assert straight["criterion"].keys() == resumed["criterion"].keys() == ({"box", "cls"} if losses else set())
    for term, state in straight["criterion"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, resumed["criterion"][term][name]), f"criterion {term}.{name} differs"
    if losses:  # the state moved away from its start (WIoU's mean 1.0, GHM's empty histogram)
        assert straight["criterion"]["box"]["mean"].item() < 0.99
        assert straight["criterion"]["cls"]["acc"].sum() > 0


def _memorise(tmp_path, images: int, img_size: int, epochs: int, extra=()) -> dict:
    cfg = load_config("yolov5_ciou", NO_AUGMENT + list(extra) + [
        f"data.max_images={images}", f"data.img_size={img_size}", "data.workers=0",
        f"train.batch_size={images}", f"train.nbs={images}", "train.warmup_epochs=0", "train.lr0=0.04",
        f"train.epochs={epochs}", f"train.eval_interval={epochs}", "train.ema=false",
    ])
    return fit(cfg, run_dir=tmp_path / "memorise", progress=False)


def test_yolov5n_memorises_a_handful_of_images(tmp_path):
    result = _memorise(tmp_path, images=4, img_size=192, epochs=200)
    assert result["coco"]["mAP50"] >= 0.5, result["coco"]


def test_the_torch_augmentation_backend_memorises_too(tmp_path):
    """data.augment_backend=torch (pixels drawn per batch by detector/data/render.py) clears the same bar as the numpy
    path above in the same setting. With flips and HSV on, 200 steps are too few for a bar: measured 2026-12-04,
    mAP50 over seeds 0 / 1 was 0.26 / 0.81 with torch and 0.62 / 0.51 with numpy (means 0.54 and 0.57); the pixels
    of those augmentations are checked directly in tests/data/test_render.py."""
    result = _memorise(tmp_path, images=4, img_size=192, epochs=200, extra=["data.augment_backend=torch"])
    assert result["coco"]["mAP50"] >= 0.5, result["coco"]


@pytest.mark.slow
def test_yolov5n_memorises_sixteen_images(tmp_path):
    result = _memorise(tmp_path, images=16, img_size=320, epochs=300)
    assert result["coco"]["mAP50"] >= 0.5, result["coco"]


def test_the_gpu_paths_switches_together_memorise_too(tmp_path):
    """Issue 11's GPU path, run on the CPU: images cached once, pixels drawn per batch (data.augment_backend=torch)
    and the forward pass under bfloat16 autocast (train.cpu_amp; on CUDA, train.amp_dtype=bfloat16) clear the bar of
    the default path above in the same setting (2-core Intel Xeon, 2026-12-05, mAP50 / mAP50-95: default 0.834 /
    0.582, torch backend 0.801 / 0.631, all three switches 0.815 / 0.523)."""
    extra = ["data.cache_images=true", "data.augment_backend=torch", "train.cpu_amp=true"]
    result = _memorise(tmp_path, images=4, img_size=192, epochs=200, extra=extra)
    assert result["coco"]["mAP50"] >= 0.5, result["coco"]
