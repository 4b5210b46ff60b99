"""Data-parallel training (``torchrun``, DistributedDataParallel) equals one process on the same global batch.

The two-process runs use gloo on the CPU through ``tests/engine/ddp_worker.py``, started by
``python -m torch.distributed.run`` exactly as a user starts ``tools/train.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from detector import build
from detector.config import load_config
from detector.data.loader import SeededSampler
from detector.engine.distributed import DistContext, context_from_env

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.max_images=8", "data.img_size=64", "data.workers=0", "train.batch_size=4", "train.nbs=4",
        "train.epochs=2", "train.eval_interval=2", "train.warmup_epochs=0.5", "train.device=cpu", "eval.batch_size=4"]

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this build")


def torchrun(nproc: int, *args: str, out: Path) -> list[dict]:
    """Run the worker under torchrun with ``nproc`` ranks; return what each rank saved."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), args[0], str(out), *args[1:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(nproc)]


# ---------------------------------------------------------------------------------------------- sampler, context
def _indices(sampler) -> list[int]:
    return [i for i, _ in sampler]


def test_each_rank_gets_its_slice_of_every_global_batch():
    """n = 10, batch 4, 2 ranks, order 0..9 (the docstring's example): rank 0 gets 0 1 | 4 5 | 8 and rank 1 gets
    2 3 | 6 7 | 9; the last global batch (8, 9) is split one each."""
    ranks = [SeededSampler(10, False, torch.Generator().manual_seed(0), 4, r, 2) for r in range(2)]
    assert _indices(ranks[0]) == [0, 1, 4, 5, 8]
    assert _indices(ranks[1]) == [2, 3, 6, 7, 9]
    assert len(ranks[0]) == len(ranks[1]) == 5


def test_shuffled_slices_put_together_are_the_one_process_batches_with_the_same_seeds():
    one = list(SeededSampler(24, True, torch.Generator().manual_seed(7)))
    ranks = [list(SeededSampler(24, True, torch.Generator().manual_seed(7), 6, r, 3)) for r in range(3)]
    for k in range(4):  # global batch k = the concatenation of the ranks' k-th slices of 2
        assert sum((rank[2 * k:2 * k + 2] for rank in ranks), []) == one[6 * k:6 * k + 6]


def test_a_last_batch_smaller_than_the_ranks_is_padded_with_the_first_items():
    """n = 9, batch 6, 3 ranks: the last global batch (6, 7, 8) gives one item each; n = 7: (6,) is padded with
    items 0 and 1 of the epoch's order, so every rank runs the same number of steps."""
    assert [_indices(SeededSampler(9, False, torch.Generator(), 6, r, 3)) for r in range(3)] == \
        [[0, 1, 6], [2, 3, 7], [4, 5, 8]]
    assert [_indices(SeededSampler(7, False, torch.Generator(), 6, r, 3)) for r in range(3)] == \
        [[0, 1, 6], [2, 3, 0], [4, 5, 1]]


def test_a_batch_that_does_not_split_evenly_is_a_config_error():
    cfg = load_config("yolov5_ciou", ["train.batch_size=5", "data.max_images=4"])
    dataset = build.build_dataset(cfg, "train")
    with pytest.raises(Exception, match="train.batch_size.*2 processes"):
        build.build_loader(cfg, dataset, train=True, rank=0, world_size=2)


def test_context_from_env():
    assert context_from_env({}) == DistContext()
    assert context_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == DistContext(1, 4, 1)
    with pytest.raises(ValueError, match="RANK=4 is not in"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="integers"):
        context_from_env({"RANK": "x", "WORLD_SIZE": "2"})


# ---------------------------------------------------------------------------------------------- no positives
@pytest.mark.parametrize("preset", ["yolov5_ciou", "yolov8_tal", "fcos", "ssd", "rpn", "yolo_e2e", "centernet"])
def test_a_batch_without_boxes_still_reaches_every_parameter(preset):
    """DDP all-reduces a gradient for every parameter; a rank whose images have no boxes must still produce one
    (a zero connected to the graph), or the ranks wait on each other forever (mmdetection #1979)."""
    cfg = load_config(preset, ["data.img_size=64"])
    model = build.build_model(cfg, num_classes=3).train()
    criterion = build.build_criterion(cfg, num_classes=3)
    loss = criterion(model(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6))["loss"]
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{preset}: no gradient for {missing[:5]}"


# ---------------------------------------------------------------------------------------------- two processes
@needs_gloo
def test_global_batchnorm_on_two_ranks_equals_batchnorm_on_the_whole_batch(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    from ddp_worker import bn_batch, bn_net

    x, target = bn_batch()
    ref = bn_net(torch.nn.BatchNorm2d)  # the same initial weights, BatchNorm2d over all 4 images
    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    ((y_ref - target) ** 2).sum().backward()
    ranks = torchrun(2, "bn", out=tmp_path)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y_ref.detach(), rtol=1e-12, atol=1e-12)
    # each rank's loss is scaled by the 2 ranks (DDP averages parameter gradients, not input gradients)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]) / 2, xr.grad, rtol=1e-10, atol=1e-12)
    for r in ranks:
        for name, param in ref.named_parameters():
            torch.testing.assert_close(r["grads"][name], param.grad, rtol=1e-10, atol=1e-12, msg=name)
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(r["buffers"][name], buf, rtol=1e-12, atol=1e-12, msg=name)


@needs_gloo
def test_two_ranks_end_with_identical_weights_equal_to_one_process_on_the_same_global_batch(tmp_path):
    """yolov5_ciou, 8 coco128 images with mosaic and the other augmentations on, global batch 4 (2 per rank),
    2 epochs, sync_bn: the two ranks hold the same weights, equal to the one-process run's up to float32 summation
    order, and evaluation gathered from both ranks scores the same images in the same order."""
    two = torchrun(2, "fit", "yolov5_ciou", *TINY, "train.sync_bn=true", out=tmp_path / "two")
    one = torchrun(1, "fit", "yolov5_ciou", *TINY, "train.sync_bn=true", out=tmp_path / "one")
    for name, tensor in two[0]["model"].items():
        assert torch.equal(tensor, two[1]["model"][name]), f"{name} differs between the ranks"
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, one[0]["model"][name], rtol=1e-4, atol=2e-5, msg=name)
    assert two[0]["result"]["coco"] == two[1]["result"]["coco"]
    assert two[0]["result"]["world_size"] == 2
    for k, v in one[0]["result"]["train"].items():
        assert two[0]["result"]["train"][k] == pytest.approx(v, rel=1e-4), k
    saved = [json.loads((tmp_path / run / "run" / "detections.json").read_text()) for run in ("two", "one")]
    assert saved[0]["image_ids"] == saved[1]["image_ids"] and len(saved[0]["image_ids"]) == 8
    assert not (tmp_path / "two" / "run" / "rank1").exists()
    assert sorted(p.name for p in (tmp_path / "two" / "run").glob("*.pt")) == ["best.pt", "last.pt"]


@needs_gloo
def test_without_sync_bn_the_ranks_still_agree(tmp_path):
    """Per-rank batch norm (the default): the ranks normalise differently but DDP keeps one set of weights
    (gradients all-reduced, rank 0's buffers broadcast); a mean-reduction recipe (FCOS) sums its counts over ranks."""
    two = torchrun(2, "fit", "fcos", *TINY, out=tmp_path)
    for name, tensor in two[0]["model"].items():
        assert torch.equal(tensor, two[1]["model"][name]), f"{name} differs between the ranks"
