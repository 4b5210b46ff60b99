"""The ablation's figures and TensorBoard sessions (``detector/ablation/plots.py``, ``hparams.py``): the paired
interval figure draws the numbers of the paired table, and every finished run becomes one HParams session whose
hyper-parameters and metrics are read back from the event files with TensorBoard's own reader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.ablation import RunResult, Variant, ablate, paired_comparisons, spec_from_vary
from detector.ablation.hparams import HPARAMS_DIR, hparam_value, run_hparams
from detector.ablation.plots import draw_paired
from detector.config import save_config

MAPS = {("ciou", 0): 0.30, ("ciou", 1): 0.34, ("ciou", 2): 0.32,
        ("giou", 0): 0.33, ("giou", 1): 0.36, ("giou", 2): 0.35}


def fake_train(cfg, run_dir=None, resume=None, progress=True):
    """Writes what fit writes, mAP from MAPS by (box loss, seed); lbox = 1 - mAP."""
    run_dir = Path(run_dir)
    save_config(cfg, run_dir / "config.yaml")
    m = MAPS[(cfg.loss.box.name, cfg.train.seed)]
    stats = {"mAP": m, "mAP50": m + 0.2, "mAP75": m - 0.1}
    (run_dir / "history.jsonl").write_text(json.dumps({"epoch": 1, "train": {"lbox": 1 - m}, "coco": stats}) + "\n")
    (run_dir / "results.json").write_text(json.dumps({"stats": stats, "train": {"lbox": 1 - m}, "train_time_s": 1.0}))
    return {"coco": stats}


def test_paired_figure_draws_the_mean_difference_and_its_interval():
    """giou - ciou per seed: +0.03, +0.02, +0.03 -> mean 0.08/3; the error bar spans the t-interval of the
    paired table and the marker sits at the mean; the baseline row has no marker."""
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    results = [RunResult(v, s, {"mAP": m}, {}, 1.0, []) for (v, s), m in MAPS.items()]
    comparisons = paired_comparisons(results, ["ciou", "giou"], "ciou", ["mAP"])
    giou = next(c for c in comparisons if c.variant == "giou")
    fig = Figure()
    draw_paired(fig, [Variant("ciou", (), "t"), Variant("giou", (), "t")], results, comparisons)
    right = fig.axes[1]
    (marker,) = [ln for ln in right.lines if ln.get_marker() == "o"]
    assert marker.get_xdata()[0] == pytest.approx(0.08 / 3) == pytest.approx(giou.mean)
    segments = [seg for coll in right.collections if isinstance(coll, matplotlib.collections.LineCollection)
                for seg in coll.get_segments()]
    assert len(segments) == 1
    assert sorted(segments[0][:, 0]) == pytest.approx(list(giou.interval))
    assert [t.get_text() for t in right.texts] == [giou.verdict]
    left = fig.axes[0]
    assert sorted(p.get_width() for p in left.patches) == pytest.approx([0.32, (0.33 + 0.36 + 0.35) / 3])


def test_ablate_writes_map_ci_and_one_hparams_session_per_run(tmp_path):
    pytest.importorskip("matplotlib")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    spec = spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou"], ["train.epochs=1"], [0, 1, 2])
    report = ablate(spec, tmp_path, train=fake_train, log=lambda s: None)
    assert (tmp_path / "map_ci.png").read_bytes()[:4] == b"\x89PNG" and tmp_path / "map_ci.png" in report.files
    sessions = sorted(p.name for p in (tmp_path / HPARAMS_DIR).iterdir() if p.is_dir())
    assert sessions == [f"{v}_seed{s}" for v in ("ciou", "giou") for s in (0, 1, 2)]
    acc = EventAccumulator(str(tmp_path / HPARAMS_DIR / "giou_seed1"))
    acc.Reload()
    start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info
                 for c in acc.PluginTagToContent("hparams").values()
                 if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
    assert start.hparams["variant"].string_value == "giou" and start.hparams["seed"].number_value == 1
    assert start.hparams["loss.box"].string_value == "giou"
    assert acc.Scalars("hparam/mAP")[0].value == pytest.approx(0.36)
    assert acc.Scalars("hparam/loss/lbox")[0].value == pytest.approx(0.64)
    # the report rewritten (e.g. --summary-only) replaces the sessions instead of adding a second set
    ablate(spec, tmp_path, train=fake_train, summary_only=True, log=lambda s: None)
    assert len([p for p in (tmp_path / HPARAMS_DIR).iterdir() if p.is_dir()]) == 6


def test_hparam_values_and_keys_a_variant_leaves_to_the_base():
    assert hparam_value("0.5") == 0.5 and hparam_value("3") == 3 and hparam_value("true") is True
    assert hparam_value("ciou") == "ciou" and hparam_value("{name: focal, gamma: 2}") == "{name: focal, gamma: 2}"
    v = Variant("g2", ("loss.cls={name: focal, gamma: 2}",), "t")
    assert run_hparams(v, 3, ["loss.box", "loss.cls"]) == {
        "variant": "g2", "seed": 3, "loss.box": "(base)", "loss.cls": "{name: focal, gamma: 2}"}
