"""The ablation report's paired and assignment sections (``detector/ablation/report.py``, ``tables.py``), the
``baseline`` choice (spec key, ``--baseline``), driven through :func:`ablate` with a fake ``train`` that writes
what ``fit`` writes from numbers chosen here, so every cell is worked out by hand in the docstrings."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from detector.ablation import (
    AblationSpec,
    RunResult,
    Variant,
    ablate,
    first_epoch_assignment,
    format_markdown_table,
    format_paired_table,
    load_spec,
    paired_comparisons,
    spec_from_vary,
    summarize,
    with_cli_overrides,
)
from detector.config import CONFIG_DIR, save_config
from detector.errors import ConfigError


class FakeTrain:
    """Writes config.yaml, history.jsonl (two epochs, each with an ``assign`` section) and results.json.

    ``numbers[(variant, seed)] = (mAP, pos_per_gt at epoch 1, unmatched_gt at epoch 1)``; the variant is the
    run folder's parent name. Epoch 2's assignment numbers are 99 (the report must read epoch 1's).
    """

    def __init__(self, numbers: dict):
        self.numbers = numbers

    def __call__(self, cfg, run_dir=None, resume=None, progress=True):
        run_dir = Path(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        m, pos, unmatched = self.numbers[(run_dir.parent.name, cfg.train.seed)]
        stats = {"mAP": m, "mAP50": m + 0.2, "mAP75": m - 0.1}
        history = [{"epoch": 1, "train": {"lbox": 0.1}, "assign": {"num_pos": 3.0, "pos_per_gt": pos,
                                                                   "unmatched_gt": unmatched}, "coco": None},
                   {"epoch": 2, "train": {"lbox": 0.05}, "assign": {"pos_per_gt": 99.0, "unmatched_gt": 0.99},
                    "coco": stats}]
        (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        (run_dir / "results.json").write_text(json.dumps({"stats": stats, "train": {"lbox": 0.05},
                                                          "train_time_s": 1.0}))
        return {"coco": stats}


def _md_lines(md: str, section: str) -> list[str]:
    """The table rows (no header, no rule) of the markdown section whose title starts with ``section``."""
    part = next(p for p in md.split("\n## ") if p.startswith(section))
    rows = [ln for ln in part.splitlines() if ln.startswith("| ")]
    return rows[1:]


def test_paired_and_assignment_sections_worked_out_by_hand(tmp_path):
    """yolov8_tal with assigner tal (baseline) or atss, seeds 0 and 1.

    mAP: tal (0.30, 0.34), atss (0.33, 0.36): d = (+0.03, +0.02), mean 0.025, sd sqrt(2 * 0.005^2) = 0.0070711,
    se 0.005, t = 5 with 1 df. Interval 0.025 ± 12.706 * 0.005 = [-0.0385, +0.0885]; p (Cauchy, 1 df) =
    1 - 2 atan(5) / pi = 0.12567; one variant, so Holm leaves it: not distinguishable from noise.
    mAP50 and mAP75 are mAP ± a constant: the same differences, the same line.
    Assignment at epoch 1: tal pos/gt (10, 12) -> 11.00 ± 1.41, unmatched (2%, 4%) -> 3.0% ± 1.4%;
    atss pos/gt (5, 5) -> 5.00 ± 0.00, unmatched (10%, 10%) -> 10.0% ± 0.0%.
    """
    numbers = {("tal", 0): (0.30, 10.0, 0.02), ("tal", 1): (0.34, 12.0, 0.04),
               ("atss", 0): (0.33, 5.0, 0.10), ("atss", 1): (0.36, 5.0, 0.10)}
    spec = spec_from_vary("yolov8_tal", ["assigner=tal,atss"], ["train.epochs=2"], [0, 1])
    report = ablate(spec, tmp_path, train=FakeTrain(numbers), log=lambda s: None)
    md = (tmp_path / "summary.md").read_text()
    assert "Holm correction applied" in md and "## Paired differences against the baseline `tal`" in md
    p = 1 - 2 * math.atan(5) / math.pi
    assert f"{p:.3f}" == "0.126"
    expected = "| atss | {} | 2 | +0.0300, +0.0200 | +0.0250 | [-0.0385, +0.0885] | 0.126 | 0.126 | " \
               "not distinguishable from noise |"
    assert _md_lines(md, "Paired") == [expected.format(t) for t in ("mAP50-95", "mAP50", "mAP75")]
    assert _md_lines(md, "Assignment") == ["| tal | `tal` | 11.00 ± 1.41 | 3.0% ± 1.4% | 2 |",
                                           "| atss | `atss` | 5.00 ± 0.00 | 10.0% ± 0.0% | 2 |"]
    assert [c.p_value for c in report.paired] == [pytest.approx(p, abs=1e-9)] * 3

    table = list(csv.DictReader(io.StringIO((tmp_path / "paired.csv").read_text())))
    assert [(r["variant"], r["baseline"], r["metric"], r["seeds"]) for r in table] == [
        ("atss", "tal", "mAP", "0 1"), ("atss", "tal", "mAP50", "0 1"), ("atss", "tal", "mAP75", "0 1")]
    assert float(table[0]["ci_low"]) == pytest.approx(0.025 - 12.7062 * 0.005, abs=1e-5)
    assert float(table[0]["p_holm"]) == pytest.approx(p, abs=1e-9)
    assert [float(d) for d in table[0]["differences"].split()] == pytest.approx([0.03, 0.02], abs=1e-12)
    assert json.loads((tmp_path / "ablation.json").read_text())["baseline"] == "tal"


def test_no_assignment_table_when_the_assigner_is_the_same(tmp_path):
    """Two box losses, one seed: no assignment section; the paired line says one seed, no interval."""
    numbers = {("ciou", 0): (0.30, 4.0, 0.1), ("giou", 0): (0.31, 4.0, 0.1)}
    spec = spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou"], ["train.epochs=2"], [0])
    ablate(spec, tmp_path, train=FakeTrain(numbers), log=lambda s: None)
    md = (tmp_path / "summary.md").read_text()
    assert "## Assignment" not in md
    assert _md_lines(md, "Paired")[0] == ("| giou | mAP50-95 | 1 | +0.0100 | +0.0100 | – | – | – | "
                                          "one seed: no interval |")


def test_first_epoch_assignment():
    history = [{"epoch": 3, "assign": {"pos_per_gt": 2}}, {"epoch": 1, "assign": {}},
               {"epoch": 2, "assign": {"pos_per_gt": 7, "unmatched_gt": 0.5}}]
    assert first_epoch_assignment(history) == {"pos_per_gt": 7.0, "unmatched_gt": 0.5}  # epoch 1 recorded none
    assert first_epoch_assignment([]) == {} and first_epoch_assignment([{"epoch": 1, "train": {}}]) == {}


def test_format_paired_table_line():
    """b against a on seeds 0..2: d = (+0.02, +0.03, +0.02), mean +0.0233, interval 0.023333 ± 4.3027 / 300 =
    [+0.0090, +0.0377], p = 1 - 7 / sqrt(51) = 0.0198; alone in its family, Holm leaves it: better."""
    results = [RunResult(v, s, {"mAP": m}, {}, 1.0, []) for v, ms in
               {"a": (0.30, 0.32, 0.31), "b": (0.32, 0.35, 0.33)}.items() for s, m in enumerate(ms)]
    lines = format_paired_table(paired_comparisons(results, ["a", "b"], "a", ["mAP"])).splitlines()
    assert lines[2] == ("| b | mAP50-95 | 3 | +0.0200, +0.0300, +0.0200 | +0.0233 | [+0.0090, +0.0377] | 0.020 | "
                        "0.020 | better |")


def test_baseline_from_the_spec_file_and_the_command_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: yolov5_ciou\nvariants:\n  ciou: []\n  giou: [loss.box=giou]\nbaseline: giou\n")
    spec = load_spec(path)
    assert spec.baseline == "giou" and spec.reference == "giou"
    assert with_cli_overrides(spec, baseline="ciou").reference == "ciou"
    assert with_cli_overrides(spec).reference == "giou"
    path.write_text("base: yolov5_ciou\nvariants:\n  ciou: []\n  giou: [loss.box=giou]\nbaseline: gio\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:5: baseline: 'gio' is not a variant .*did you mean 'giou'"):
        load_spec(path)
    assert spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou"]).reference == "ciou"
    with pytest.raises(ConfigError, match=r"command line: baseline: 'nope' is not a variant"):
        spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou"], baseline="nope")


def test_deltas_and_bold_row_follow_the_baseline():
    """Baseline b (mAP 0.4): a's delta 0.3 - 0.4 = -0.1; b's row is bold and holds the ref cells."""
    spec = AblationSpec(str(CONFIG_DIR / "yolov5_ciou.yaml"), (), (Variant("a", (), "t"), Variant("b", (), "t")),
                        (0,), None, "t", baseline="b")
    results = [RunResult("a", 0, {"mAP": 0.3, "mAP50": 0.5}, {}, 1.0, []),
               RunResult("b", 0, {"mAP": 0.4, "mAP50": 0.6}, {}, 1.0, [])]
    rows = summarize(spec.variants, results, 1, spec.reference)
    assert rows[0].deltas["mAP"] == pytest.approx(-0.1) and rows[1].deltas == {"mAP": None, "mAP50": None}
    lines = format_markdown_table(rows, spec.reference).splitlines()
    assert lines[2].startswith("| a | (base) | 0.3000 | -0.1000 | 0.5000 | -0.1000 |")
    assert lines[3].startswith("| **b** | (base) | 0.4000 | ref (b) | 0.6000 | ref (b) |")


def test_the_reports_ground_truth_decodes_no_image(monkeypatch):
    """--summary-only on a spec with data.cache_images: the TIDE / bootstrap ground truth reads annotations only."""
    from types import SimpleNamespace

    from detector.ablation.report import evaluation_ground_truth
    from detector.config import load_config
    from detector.data.base import DetectionDataset

    def refuse(self):
        raise AssertionError("an image was decoded for the report's ground truth")

    monkeypatch.setattr(DetectionDataset, "cache_images", refuse)
    cfg = load_config("demo", ["data.cache_images=true", "data.max_images=5"])
    coco_gt = evaluation_ground_truth([SimpleNamespace(cfg=cfg)])
    assert len(coco_gt.getImgIds()) == 5 and len(coco_gt.getAnnIds()) > 0
