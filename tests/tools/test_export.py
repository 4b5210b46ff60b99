"""ONNX round trip: tools/export.py on a small checkpoint, run with onnxruntime, against the PyTorch model.

The reference is the project's own inference path on the *unfused* model: ``model(images)`` -> the coder's
``decode`` and ``detection_scores`` for raw outputs, then :func:`detector.ops.nms.postprocess_scores` (torchvision's
batched NMS, or the top ``max_det`` for NMS-free heads) for detections. The exported graph shares none of that code
past the convolutions: it is conv + BN fused, flattened with reshapes, and post-processed by ONNX's
NonMaxSuppression / TopK, so agreement checks the export, not a copy of itself.

Weights are random with BatchNorm statistics far from the identity (so fusion matters) and head biases spread
around 0 (so scores cover (0, 1) and vary between priors: with the training initialisation every prior of a tiny
untrained model scores the same, and ties would make the order of equal detections arbitrary). The graph is traced
at batch 2 and run at batches 3 and 1 (dynamic batch axis), at a non-square 64 x 96 input.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector import build
from detector.config import config_to_dict, load_config
from detector.engine.checkpoint import save_checkpoint
from detector.ops.nms import postprocess_scores
from detector.structures import detection_scores
from tool_loader import load_tool  # noqa: E402

onnx = pytest.importorskip("onnx", reason="needs the export extra: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime", reason="needs the export extra: pip install -e '.[export]'")

SIZE = (64, 96)
TINY = ["model.depth_multiple=0.33", "model.width_multiple=0.125", "data.img_size=64"]
PRESETS = ("yolov5_ciou", "yolov8_tal", "yolo_e2e")
# Boxes (pixels, up to ~400 for these random weights) to 1e-3 relative, scores to 1e-4 absolute: float32 rounding
# through fused convolutions and the decode, summed in another order by onnxruntime (MLAS) than by PyTorch (oneDNN),
# which picks its kernels by processor (measured: 0.009 px on a 417 px coordinate on an AMD EPYC, 1.1e-5 on scores;
# 1.8e-4 relative, 0.0036 px on a 20 px coordinate, on an Intel Xeon with AMX, 2026-12-05). A wrong export (a
# missing layer, a wrong anchor or stride) is off by whole pixels.
BOX_TOL = {"rtol": 1e-3, "atol": 1e-3}
SCORE_ATOL = 1e-4


def _export_tool():
    return load_tool("export")


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    """He-normal convolutions, head outputs ~ N(0, 0.02) weights and N(0, 1) biases, random BatchNorm affine
    weights, and BatchNorm statistics measured on block images (so features keep their scale through the tiny
    network and depend on the image)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.bias is None:  # inside a Conv-BN-SiLU block
                torch.nn.init.kaiming_normal_(m.weight)
            else:  # a head's output convolution: logits of a few units, no saturated scores
                m.weight.normal_(0.0, 0.02), m.bias.normal_(0.0, 1.0)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
            m.reset_running_stats(), setattr(m, "momentum", None)  # cumulative average over the batches below
    model.train()
    for seed in range(4):
        model(_images(4, seed=100 + seed))
    model.eval()


def _checkpoint(tmp_path: Path, preset: str, overrides=()) -> tuple[Path, torch.nn.Module, object]:
    """A checkpoint as tools/train.py writes it (3 classes, random weights, EMA = the same weights)."""
    cfg = load_config(preset, [*TINY, *overrides])
    model = build.build_model(cfg, num_classes=3).eval()
    _randomise(model)
    state = {"model": model.state_dict(), "ema": model.state_dict(), "ema_updates": 1, "optimizer": {},
             "scaler": None, "epoch": 0, "best_fitness": 0.0, "config": config_to_dict(cfg), "rng": {},
             "version": 1, "metrics": {}, "num_classes": 3, "names": ["a", "b", "c"]}
    return save_checkpoint(tmp_path / f"{preset}.pt", state), model, cfg


def _export(weights: Path, postprocess: str, *extra: str) -> Path:
    out = weights.with_name(f"{weights.stem}_{postprocess}.onnx")
    argv = ["--weights", str(weights), "--out", str(out), "--postprocess", postprocess, "--img-size", *map(str, SIZE)]
    assert _export_tool().main([*argv, *extra]) == 0
    return out


def _run(path: Path, images: torch.Tensor) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.as_tensor(a) for a in session.run(None, {"images": images.numpy()})]


@torch.no_grad()
def _reference(model, cfg, images):
    outputs = model(images)
    return build.build_coder(cfg).decode(outputs.box, outputs.priors), detection_scores(outputs)


def _images(batch: int, seed: int | None = None) -> torch.Tensor:
    """Tensor[batch, 3, 64, 96] of 8 x 8-pixel blocks of random colour: structure that the features respond to
    (pixel noise averages out, leaving every image with nearly the same scores)."""
    g = torch.Generator().manual_seed(batch if seed is None else seed)
    blocks = torch.rand(batch, 3, SIZE[0] // 8, SIZE[1] // 8, generator=g)  # (B, 3, 8, 12)
    return torch.nn.functional.interpolate(blocks, size=SIZE, mode="nearest")


@pytest.fixture(scope="module", params=PRESETS)
def exported(request, tmp_path_factory):
    weights, model, cfg = _checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    return model, cfg, _export(weights, "raw"), _export(weights, "detections")


@pytest.mark.parametrize("batch", [3, 1])
def test_raw_outputs_match_pytorch(exported, batch):
    model, cfg, raw_path, _ = exported
    images = _images(batch)
    boxes, scores = _run(raw_path, images)
    ref_boxes, ref_scores = _reference(model, cfg, images)
    assert boxes.shape == ref_boxes.shape and scores.shape == ref_scores.shape == (batch, ref_boxes.shape[1], 3)
    assert 0.05 < float(scores.std()) and float(scores.max()) < 1  # varied scores, not a saturated constant
    torch.testing.assert_close(boxes, ref_boxes, **BOX_TOL)
    torch.testing.assert_close(scores, ref_scores, atol=SCORE_ATOL, rtol=0)


def test_graph_is_fused(exported):
    ops = {node.op_type for node in onnx.load(str(exported[2])).graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops


def _assert_same_detections(got: torch.Tensor, ref: torch.Tensor) -> None:
    """got, ref (Tensor[n, 6]): the same rows up to float rounding, ``got`` by decreasing score. Rows are paired
    with their nearest counterpart (two scores equal to rounding may come in either order on another CPU)."""
    assert got.shape == ref.shape and bool((got[1:, 4] <= got[:-1, 4]).all())
    pair = torch.cdist(got.double(), ref.double(), p=float("inf")).argmin(1)  # (n,)
    assert pair.unique().numel() == pair.numel()  # a one-to-one pairing
    torch.testing.assert_close(got[:, :4], ref[pair, :4], **BOX_TOL)
    torch.testing.assert_close(got[:, 4], ref[pair, 4], atol=SCORE_ATOL, rtol=0)
    assert torch.equal(got[:, 5], ref[pair, 5])


@pytest.mark.parametrize("batch", [3, 1])
def test_detections_match_postprocess(exported, batch):
    """NMS (yolov5_ciou, yolov8_tal) or top-k (yolo_e2e) in the graph keeps what postprocess_scores keeps."""
    model, cfg, _, det_path = exported
    images = _images(batch)
    dets, counts = _run(det_path, images)
    ev = cfg.eval
    assert dets.shape[0] == counts.shape[0] == batch and dets.shape[2] == 6 and dets.shape[1] <= ev.max_det
    ref = postprocess_scores(*_reference(model, cfg, images), conf_thres=ev.conf_thres, iou_thres=ev.iou_thres,
                             max_det=ev.max_det, method=ev.nms)
    for b in range(batch):
        n = int(counts[b])
        assert n == ref[b].shape[0] > 0
        _assert_same_detections(dets[b, :n], ref[b])
        assert not dets[b, n:].any()  # padding rows are zeros


def test_nms_suppresses_and_pads(tmp_path):
    """A threshold where NMS removes candidates and images keep fewer than max_det: counts and padding differ."""
    weights, model, cfg = _checkpoint(tmp_path, "yolov5_ciou", ["eval.conf_thres=0.5", "eval.max_det=45"])
    images = _images(3)
    boxes, scores = _reference(model, cfg, images)
    dets, counts = _run(_export(weights, "detections"), images)
    ref = postprocess_scores(boxes, scores, conf_thres=0.5, iou_thres=cfg.eval.iou_thres, max_det=45)
    candidates = (scores > 0.5).sum((1, 2))  # (B,) (prior, class) pairs before NMS
    assert counts.tolist() == [r.shape[0] for r in ref]
    assert (counts < candidates).all() and (counts < 45).any() and (counts == 45).any()
    for b, r in enumerate(ref):
        _assert_same_detections(dets[b, :len(r)], r)
        assert not dets[b, len(r):].any()


@pytest.mark.parametrize("preset", ["yolov5_ciou", "yolo_e2e"])
def test_no_detection_above_the_threshold(tmp_path, preset):
    """conf_thres 1: no score can pass (scores < 1), so every count is 0 and every row zero, NMS and top-k alike."""
    weights, _, _ = _checkpoint(tmp_path, preset)
    dets, counts = _run(_export(weights, "detections", "--conf-thres", "1.0"), _images(2))
    assert counts.tolist() == [0, 0] and not dets.any()


@pytest.mark.parametrize("overrides, named", [
    (["eval.nms=diou"], "eval.nms='diou'"),
    (["model.box_uncertainty=true", "eval.variance_voting=true"], "variance voting"),
])
def test_post_processing_without_an_onnx_operator_is_refused(tmp_path, capsys, overrides, named):
    weights, _, _ = _checkpoint(tmp_path, "yolov5_ciou", overrides)
    assert _export_tool().main(["--weights", str(weights), "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert named in err and "postprocess='raw'" in err
    assert _export_tool().main(["--weights", str(weights), "--img-size", "64", "--postprocess", "raw"]) == 0


def test_input_size_not_a_multiple_of_the_stride_is_refused(tmp_path, capsys):
    weights, _, _ = _checkpoint(tmp_path, "yolov5_ciou")
    assert _export_tool().main(["--weights", str(weights), "--img-size", "70"]) == 2
    assert "multiple of the largest stride 32" in capsys.readouterr().err


def test_missing_checkpoint_is_reported(tmp_path, capsys):
    assert _export_tool().main(["--weights", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
