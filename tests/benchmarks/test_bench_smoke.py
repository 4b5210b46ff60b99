"""Every script of benchmarks/ runs its seconds-long smoke form, in process, and writes the JSON it prints.

No timing is asserted: a figure must only exist, be finite and positive. The shared output helpers
(benchmarks/_common.py) and the evaluation benchmark's synthetic detections are checked against values worked out
by hand.
"""
from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbour _common as python benchmarks/x.py would

common = importlib.import_module("_common")

# script -> (extra arguments, the measured values every row must hold, finite and > 0)
SMOKE = {
    "bench_train": ([], ["ms_per_step", "images_per_s", "params"]),
    "bench_epoch": ([], ["seconds", "images_per_s", "batches"]),
    "bench_infer": ([], ["images_per_s", "ms_per_image", "forward_ms_per_image"]),
    "bench_eval": ([], ["seconds", "speedup"]),
    "bench_assign": ([], ["batch_2_ms"]),
    "bench_losses": (["--only", "ciou", "bce"], ["forward_ms", "forward_backward_ms"]),
    "bench_grad_precision": ([], ["backbone_norm_ratio", "head_norm_ratio", "head_cos"]),
}


def run_smoke(name: str, tmp_path: Path, extra: list[str]) -> tuple[list[dict], dict]:
    """(rows returned by the script's main, the JSON record it wrote)."""
    path = tmp_path / f"{name}.json"
    rows = importlib.import_module(name).main(["--smoke", "--json", str(path), *extra])
    return rows, json.loads(path.read_text())


@pytest.mark.parametrize("name", list(SMOKE))
def test_smoke_form_writes_its_table_as_json(name, tmp_path, capsys):
    extra, measured = SMOKE[name]
    rows, record = run_smoke(name, tmp_path, extra)
    assert rows, f"{name} measured nothing"
    assert record["rows"] == json.loads(json.dumps(rows))
    assert record["command"].split()[:5] == ["python", f"benchmarks/{name}.py", "--smoke", "--json",
                                             str(tmp_path / f"{name}.json")]
    printed = capsys.readouterr().out
    for r in rows:
        assert list(r)[:4] == list(common.ROW_KEYS)
        assert all(isinstance(r[k], str) and r[k] for k in common.ROW_KEYS)
        assert r["configuration"].split(",")[0].split()[0] in printed  # the table names what it measured
        for key in measured:
            if r.get("note") == "not installed":  # an optional evaluation backend
                continue
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])


def test_train_step_of_several_presets(tmp_path):
    """--preset takes several configs, one row each (gpu_session.sh steps every preset under CUDA AMP this way)."""
    rows = importlib.import_module("bench_train").main(["--smoke", "--preset", "yolov5_ciou", "rpn", "--json",
                                                        str(tmp_path / "t.json")])
    assert [r["configuration"].split()[0] for r in rows] == ["yolov5_ciou", "rpn"]


def test_train_step_from_the_loader(tmp_path):
    """--source loader: batches drawn from the training loader while timing, warm-up then timed steps."""
    rows, _ = run_smoke("bench_train", tmp_path, ["--source", "loader"])
    assert "loader batches" in rows[0]["configuration"] and rows[0]["ms_per_step"] > 0


def test_eval_backends_agree_on_the_smoke_detections(tmp_path):
    rows, _ = run_smoke("bench_eval", tmp_path, ["--datasets", "coco128"])
    installed = [r for r in rows if r.get("note") != "not installed"]
    assert [r["speedup"] for r in installed][:1] == [1.0]  # pycocotools is the reference
    assert all(r["max_abs_diff"] <= 1e-6 for r in installed)


def test_markdown_table_hand_worked():
    """Keys in first-seen order, missing cells '-', floats to 4 significant digits with thousands separators:
    2594.31 -> '2,594' (4 integer digits, no decimals), 609.14 -> '609.1', 0.012345 -> '0.01235' (4 significant
    digits start at the hundredths), NaN -> '-', int 1872157 -> '1,872,157'."""
    rows = [{"figure": "a", "configuration": "b", "device": "c", "date": "d", "ms": 2594.31, "n": 1872157},
            {"figure": "a", "configuration": "e", "device": "c", "date": "d", "ms": 609.14, "x": 0.012345},
            {"figure": "a", "configuration": "f", "device": "c", "date": "d", "ms": float("nan")}]
    assert common.markdown_table(rows).splitlines() == [
        "| figure | configuration | device | date | ms | n | x |",
        "|---|---|---|---|---:|---:|---:|",
        "| a | b | c | d | 2,594 | 1,872,157 | - |",
        "| a | e | c | d | 609.1 | - | 0.01235 |",
        "| a | f | c | d | - | - | - |",
    ]


def test_take_continues_the_shared_iterator():
    source = iter(range(10))
    first, second = common.Take(source, 3), common.Take(source, 4)
    assert (len(first), len(second)) == (3, 4)
    assert list(first) == [0, 1, 2] and list(second) == [3, 4, 5, 6]


@pytest.fixture(scope="module")
def coco128_gt():
    from detector import build
    from detector.config import load_config

    return build.build_dataset(load_config("yolov5_ciou", ["data.dataset=coco128"]), "val").coco_gt()


def test_synthetic_detections_unperturbed_are_the_ground_truth(coco128_gt):
    """No jitter, no miss, no wrong class, no background: one detection per annotation (crowd regions included:
    a detection on a crowd region is ignored), so pycocotools gives mAP = mAP50 = AR100 = 1."""
    from detector.evaluation.coco import evaluate_coco

    ids = sorted(coco128_gt.getImgIds())[:16]
    dets = importlib.import_module("bench_eval").synthetic_detections(coco128_gt, ids, 0, jitter=0, miss=0, wrong=0)
    assert len(dets) == sum(len(coco128_gt.imgToAnns[i]) for i in ids)
    stats = evaluate_coco(coco128_gt, dets, ids)
    assert stats["mAP"] == pytest.approx(1.0) and stats["mAP50"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)


def test_synthetic_detections_fill_each_image_to_per_image(coco128_gt):
    """With no misses, image i has max(per_image, objects_i) detections: the objects' own, then background up to
    per_image; an image with more objects than per_image gets no background. Perturbed boxes score below 1 mAP."""
    from collections import Counter

    from detector.evaluation.coco import evaluate_coco

    ids = sorted(coco128_gt.getImgIds())[:16]
    objects = {i: len(coco128_gt.imgToAnns[i]) for i in ids}
    per_image = sorted(objects.values())[8]  # the median: some images above it, some below
    dets = importlib.import_module("bench_eval").synthetic_detections(coco128_gt, ids, per_image, miss=0)
    assert Counter(d["image_id"] for d in dets) == {i: max(per_image, n) for i, n in objects.items()}
    assert all(d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in dets)
    assert evaluate_coco(coco128_gt, dets, ids)["mAP"] < 0.9


def test_gradient_comparison_hand_worked():
    """compare(g, ref) per model part: g = ref gives error 0, cosine 1, ratio 1; g = -2 ref gives error 3 (|-3 ref| /
    |ref|), cosine -1, ratio 2; the parts are the names' first components."""
    grad_precision = importlib.import_module("bench_grad_precision")
    ref = {"head.w": torch.tensor([3.0, 4.0]), "head.b": torch.tensor([0.0]), "neck.w": torch.tensor([1.0, 0.0])}
    same = grad_precision.compare(ref, ref)
    assert same == {"head_rel_err": 0.0, "head_cos": 1.0, "head_norm_ratio": 1.0,
                    "neck_rel_err": 0.0, "neck_cos": 1.0, "neck_norm_ratio": 1.0}
    flipped = grad_precision.compare({k: -2 * v for k, v in ref.items()}, ref)
    assert flipped["head_rel_err"] == pytest.approx(3.0) and flipped["head_cos"] == pytest.approx(-1.0)
    assert flipped["neck_norm_ratio"] == pytest.approx(2.0)


def test_float32_gradients_agree_with_float64(tmp_path):
    """The smoke model's float32 step, contiguous, is float64's to float32 rounding (the comparison is live: a wrong
    pairing of gradients or a stale copy of the model would not be)."""
    rows = importlib.import_module("bench_grad_precision").main(["--smoke", "--json", str(tmp_path / "g.json")])
    fp32 = rows[0]
    assert fp32["configuration"].endswith(": float32")
    for part in ("backbone", "neck", "head"):
        assert fp32[f"{part}_rel_err"] < 1e-3 and fp32[f"{part}_cos"] > 0.9999
