"""Ablations (``detector/ablation/``, ``tools/ablate.py``): spec parsing from YAML and the command line,
up-front validation naming the variant, the summary's numbers, skip / resume / failure handling, plots, and
one real tiny ablation (2 variants x 1 seed) through ``fit``.

Most tests drive :func:`ablate` with a fake ``train`` that writes what ``fit`` writes (config.yaml,
history.jsonl, results.json) from numbers chosen here, so the expected table cells are worked out by hand.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detector.ablation import (
    AblationSpec,
    RunResult,
    Variant,
    ablate,
    check_existing_runs,
    config_differences,
    default_out_dir,
    epoch_curve,
    format_duration,
    format_markdown_table,
    format_mean_std,
    history_values,
    load_spec,
    mean_std,
    plan_runs,
    run_status,
    spec_from_vary,
    split_values,
    summarize,
    value_name,
    with_cli_overrides,
    write_plots,
)
from detector.ablation.bootstrap import read_detections
from detector.ablation.errors import error_breakdown
from detector.build import build_dataset
from detector.config import CONFIG_DIR, REPO_ROOT, save_config
from detector.engine.trainer import fit
from detector.evaluation.coco import evaluate_coco
from detector.errors import ConfigError

TINY = ["data.max_images=2", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=1", "eval.batch_size=2", "train.device=cpu"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("ablate_tool", REPO_ROOT / "tools" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def one_thread():
    """Tiny trainings on a shared 2-core machine: one torch thread is ~30x faster than two competing ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeTrain:
    """Stands in for ``fit``: writes config.yaml, history.jsonl and results.json like it, from given numbers.

    ``numbers[(variant_box_loss, seed)] = (mAP, mAP50, mAP75, lbox, time_s)``; the variant is recognised by
    ``cfg.loss.box.name`` and the seed by ``cfg.train.seed``. Every call is recorded in ``calls``.
    """

    def __init__(self, numbers: dict, fail: set = frozenset()):
        self.numbers, self.fail, self.calls = numbers, fail, []

    def __call__(self, cfg, run_dir=None, resume=None, progress=True):
        key = (cfg.loss.box.name, cfg.train.seed)
        self.calls.append((key, "resume" if resume is not None else "new"))
        run_dir = Path(resume).parent if resume is not None else Path(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        if key in self.fail:
            raise FloatingPointError("non-finite loss at epoch 1")
        m, m50, m75, lbox, t = self.numbers[key]
        stats = {"mAP": m, "mAP50": m50, "mAP75": m75}
        history = [{"epoch": 1, "train": {"lbox": 2 * lbox, "lobj": 0.5}, "coco": None, "lr": [0.01], "time_s": t / 2},
                   {"epoch": 2, "train": {"lbox": lbox, "lobj": 0.25}, "coco": stats, "lr": [0.01], "time_s": t}]
        (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        (run_dir / "results.json").write_text(json.dumps({"stats": stats, "train": history[-1]["train"],
                                                          "train_time_s": t}))
        return {"coco": stats}


def _spec(variants: dict[str, list[str]], seeds=(0,), common=("train.epochs=2",)) -> AblationSpec:
    return AblationSpec(str(CONFIG_DIR / "yolov5_ciou.yaml"), tuple(common),
                        tuple(Variant(n, tuple(o), "test") for n, o in variants.items()), tuple(seeds), None, "test")


# --------------------------------------------------------------------------------------------------
# spec from YAML
# --------------------------------------------------------------------------------------------------

def test_spec_from_yaml_resolves_base_relative_to_the_file(tmp_path):
    base = _write(tmp_path / "mybase.yaml", "base: yolov5_ciou.yaml\ntrain: {epochs: 7}\n")
    spec_file = _write(tmp_path / "ablations" / "spec.yaml", (
        "base: ../mybase.yaml\n"                                  # line 1
        "set: [data.img_size=320, train.batch_size=4]\n"          # line 2
        "seeds: [0, 3]\n"                                         # line 3
        "variants:\n"                                             # line 4
        "  ciou: [loss.box=ciou]\n"                               # line 5
        "  focal_eiou: [\"loss.box={name: focal_eiou, gamma: 0.5}\"]\n"
        "  plain:\n"                                              # line 7: no overrides = the base as is
        "out: runs/ablate/mine\n"))
    spec = load_spec(spec_file)
    assert spec.base == str(base.resolve())
    assert spec.common == ("data.img_size=320", "train.batch_size=4")
    assert spec.seeds == (0, 3)
    assert [v.name for v in spec.variants] == ["ciou", "focal_eiou", "plain"]
    assert spec.variants[1].overrides == ("loss.box={name: focal_eiou, gamma: 0.5}",)
    assert spec.variants[2].overrides == ()
    assert spec.variants[0].origin == f"{spec_file}:5"
    assert spec.out == "runs/ablate/mine"

    runs = plan_runs(spec, tmp_path / "out")
    # seed-major: every variant with seed 0, then with seed 3
    assert [(r.variant.name, r.seed) for r in runs] == [("ciou", 0), ("focal_eiou", 0), ("plain", 0),
                                                        ("ciou", 3), ("focal_eiou", 3), ("plain", 3)]
    r = runs[4]
    assert r.overrides == ("data.img_size=320", "train.batch_size=4", "loss.box={name: focal_eiou, gamma: 0.5}",
                           "train.seed=3")
    assert r.run_dir == tmp_path / "out" / "focal_eiou" / "seed3"
    assert (r.cfg.train.epochs, r.cfg.train.seed, r.cfg.data.img_size) == (7, 3, 320)  # base file + overrides
    assert (r.cfg.loss.box.name, r.cfg.loss.box.params) == ("focal_eiou", {"gamma": 0.5})
    assert runs[2].cfg.loss.box.name == "ciou"  # the base's own loss


def test_spec_bare_base_name_and_defaults(tmp_path):
    spec = load_spec(_write(tmp_path / "s.yaml", "base: yolov5_giou\nvariants: {a: loss.cls=focal}\n"))
    assert spec.base == str(CONFIG_DIR / "yolov5_giou.yaml")
    assert spec.seeds == (0,) and spec.common == () and spec.out is None
    assert spec.variants[0].overrides == ("loss.cls=focal",)  # a single string is a one-item list
    assert default_out_dir(spec) == Path("runs/ablate/s")
    spec = with_cli_overrides(spec, ["train.epochs=5"], [4, 5], "elsewhere")
    assert (spec.common, spec.seeds, spec.out) == (("train.epochs=5",), (4, 5), "elsewhere")


@pytest.mark.parametrize("text, match", [
    ("base: yolov5_ciou\nvariant: {a: []}\n", r"s\.yaml:2: variant: unknown key .*did you mean 'variants'"),
    ("base: yolov5_ciou\n", r"variants: missing"),
    ("base: nope\nvariants: {a: []}\n", r"s\.yaml:1: base: config 'nope' not found"),
    ("base: yolov5_ciou\nset: [train.seed=3]\nvariants: {a: []}\n", r"s\.yaml:2: set: .*seeds are set by"),
    ("base: yolov5_ciou\nseeds: [0, 0]\nvariants: {a: []}\n", r"s\.yaml:2: seeds: .*repeats"),
    ("base: yolov5_ciou\nseeds: [-1]\nvariants: {a: []}\n", r"s\.yaml:2: seeds: .*>= 0"),
    ("base: yolov5_ciou\nvariants:\n  a/b: []\n", r"s\.yaml:3: variants: variant name 'a/b'"),
    ("base: yolov5_ciou\nvariants:\n  a:\n    - loss.box: giou\n", r"s\.yaml:3: variants\.a: .*not `- loss\.box: giou`"),
    ("base: yolov5_ciou\nvariants: {}\n", r"variants: expected a non-empty mapping"),
])
def test_spec_errors_name_file_line_and_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(_write(tmp_path / "s.yaml", text))


def test_shipped_ablation_specs_validate():
    """configs/ablations/*.yaml: every run config loads and validates; box_losses has the seven losses."""
    box = load_spec(CONFIG_DIR / "ablations" / "box_losses.yaml")
    runs = plan_runs(box, "unused")
    names = ["ciou", "giou", "diou", "eiou", "focal_eiou", "iou", "smooth_l1"]
    assert [v.name for v in box.variants] == names
    assert len(runs) == len(names) * len(box.seeds)
    assert [r.cfg.loss.box.name for r in runs[:len(names)]] == names
    assert runs[4].cfg.loss.box.params == {"gamma": 0.5}
    assert box.base == str(CONFIG_DIR / "yolov5_ciou.yaml")
    cls = load_spec(CONFIG_DIR / "ablations" / "cls_losses.yaml")
    assert {r.cfg.loss.cls.name for r in plan_runs(cls, "unused")} == {"bce", "focal", "balanced_bce"}


# --------------------------------------------------------------------------------------------------
# spec from the command line
# --------------------------------------------------------------------------------------------------

def test_split_values_keeps_brackets_and_quotes_together():
    assert split_values("ciou, giou,diou") == ["ciou", "giou", "diou"]
    assert split_values("ciou,{name: focal_eiou, gamma: 0.5}") == ["ciou", "{name: focal_eiou, gamma: 0.5}"]
    assert split_values("[8, 16],'a,b'") == ["[8, 16]", "'a,b'"]
    for bad in ("ciou,,giou", "{name: x", "a]"):
        with pytest.raises(ValueError):
            split_values(bad)


def test_value_names_are_folder_safe():
    assert value_name("giou") == "giou"
    assert value_name("{name: focal_eiou, gamma: 0.5}") == "focal_eiou_gamma0.5"
    assert value_name("[8, 16, 32]") == "8_16_32"
    assert value_name("0.01") == "0.01"


def test_spec_from_vary_one_key_and_a_grid():
    spec = spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou,{name: focal_eiou, gamma: 0.5}"],
                          ["train.epochs=3"], [0, 1], out=None)
    assert spec.base == str(CONFIG_DIR / "yolov5_ciou.yaml")
    assert [v.name for v in spec.variants] == ["ciou", "giou", "focal_eiou_gamma0.5"]
    assert spec.variants[2].overrides == ("loss.box={name: focal_eiou, gamma: 0.5}",)
    assert spec.common == ("train.epochs=3",) and spec.seeds == (0, 1)
    assert default_out_dir(spec) == Path("runs/ablate/yolov5_ciou_loss.box")

    grid = spec_from_vary("yolov5_ciou", ["loss.box=ciou,giou", "loss.cls=bce,focal"])
    assert [v.name for v in grid.variants] == ["ciou+bce", "ciou+focal", "giou+bce", "giou+focal"]
    assert grid.variants[1].overrides == ("loss.box=ciou", "loss.cls=focal")
    with pytest.raises(ConfigError, match="two variants are named 'ciou'"):
        spec_from_vary("yolov5_ciou", ["loss.box=ciou,ciou"])
    with pytest.raises(ConfigError, match="--seeds"):
        spec_from_vary("yolov5_ciou", ["train.seed=1,2"])
    with pytest.raises(ConfigError, match="--vary loss.box: expected KEY=V1,V2"):
        spec_from_vary("yolov5_ciou", ["loss.box"])


def test_cli_argument_rules():
    tool = _load_tool()
    for argv in (["--cfg", "yolov5_ciou"], ["--spec", "a.yaml", "--cfg", "b"], [],
                 ["--spec", "a.yaml", "--vary", "loss.box=giou"]):
        with pytest.raises(SystemExit) as exc:
            tool.parse_args(argv)
        assert exc.value.code == 2
    args = tool.parse_args(["--cfg", "yolov5_ciou", "--vary", "loss.box=ciou,giou", "--vary", "loss.cls=bce",
                            "--set", "train.epochs=10", "--seeds", "0", "1", "--out", "runs/x"])
    assert args.vary == ["loss.box=ciou,giou", "loss.cls=bce"] and args.seeds == [0, 1]
    assert args.set == ["train.epochs=10"] and args.out == "runs/x"


# --------------------------------------------------------------------------------------------------
# up-front validation
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    ("loss.box=gioou", r"variant 'v5' .*loss\.box.*did you mean 'giou'"),
    ("train.epoch=3", r"variant 'v5' .*train\.epoch: unknown key; did you mean 'epochs'"),
    ("loss.box={name: focal_eiou, gama: 0.5}", r"variant 'v5' .*loss\.box\.gama.*'gamma'"),
    ("data.dataset=nowhere", r"variant 'v5' .*data\.dataset: dataset 'nowhere' not found"),
])
def test_a_typo_in_the_last_variant_fails_before_anything_trains(tmp_path, bad, match):
    train = FakeTrain({})
    variants = {f"v{i}": [f"loss.box={n}"] for i, n in enumerate(["ciou", "giou", "diou", "eiou"], 1)}
    variants["v5"] = [bad]
    with pytest.raises(ConfigError, match=match) as exc:
        ablate(_spec(variants, seeds=(0, 1)), tmp_path / "out", train=train, log=lambda s: None)
    assert str(exc.value).startswith("variant 'v5' (seed 0; defined at test): ")
    assert train.calls == [] and not (tmp_path / "out").exists()


def test_cli_reports_a_bad_variant_with_exit_status_2(tmp_path, capsys):
    code = _load_tool().main(["--cfg", "yolov5_ciou", "--vary", "loss.box=ciou,gioou", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: variant 'gioou'") and "did you mean 'giou'" in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------
# aggregation and the table
# --------------------------------------------------------------------------------------------------

def test_mean_std_is_the_sample_standard_deviation():
    """[1, 2, 3, 4]: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3 -> std sqrt(5/3)."""
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert std == pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 4.0]), abs=1e-12)
    assert mean_std([0.3]) == (0.3, None)
    with pytest.raises(ValueError):
        mean_std([])
    assert format_mean_std((0.32, 0.028284)) == "0.3200 ± 0.0283"
    assert format_mean_std((0.35, None)) == "0.3500" and format_mean_std(None) == "–"
    assert [format_duration(s) for s in (4.25, 42.0, 150.0, 5400.0, None)] == ["4.2 s", "42 s", "2.5 min",
                                                                               "1.50 h", "–"]


# (box loss, seed) -> (mAP, mAP50, mAP75, final lbox, train time s)
NUMBERS = {
    ("ciou", 0): (0.30, 0.50, 0.31, 0.05, 100.0), ("ciou", 1): (0.34, 0.56, 0.35, 0.07, 140.0),
    ("giou", 0): (0.25, 0.40, 0.20, 0.08, 90.0), ("giou", 1): (0.27, 0.46, 0.24, 0.10, 110.0),
    ("diou", 0): (0.35, 0.60, 0.33, 0.04, 30.0),
}


def test_summary_table_values_are_worked_out_by_hand(tmp_path):
    """Two seeds planned; diou's seed 1 run fails.

    ciou: mAP (0.30, 0.34) -> mean 0.32, std sqrt((0.02^2 + 0.02^2) / 1) = 0.028284 -> "0.3200 ± 0.0283";
          mAP50 (0.50, 0.56) -> 0.53 ± sqrt(2 * 0.03^2) = 0.042426; mAP75 (0.31, 0.35) -> 0.33 ± 0.0283;
          lbox (0.05, 0.07) -> 0.06; lobj 0.25; time (100, 140) -> 120 s = "2.0 min".
    giou: mAP (0.25, 0.27) -> 0.26 ± 0.014142, delta 0.26 - 0.32 = -0.06;
          mAP50 (0.40, 0.46) -> 0.43 ± 0.042426, delta 0.43 - 0.53 = -0.10; mAP75 (0.20, 0.24) -> 0.22 ± 0.0283;
          lbox 0.09; time 100 s = "1.7 min".
    diou: one finished seed of two: mAP 0.35 (no std), delta +0.03; mAP50 0.60, delta +0.07; seeds "1/2".
    """
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"], "diou": ["loss.box=diou"]}, seeds=(0, 1))
    train = FakeTrain(NUMBERS, fail={("diou", 1)})
    report = ablate(spec, tmp_path, train=train, log=lambda s: None)
    assert [o.status for o in report.outcomes] == ["trained"] * 5 + ["failed"]
    assert report.failed[0].error == "FloatingPointError: non-finite loss at epoch 1"

    md = (tmp_path / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| *"): line.split(" | ") for line in md.split("\n## ")[0].splitlines()
            if line.startswith("| ") and "---" not in line}  # the summary table (paired tables follow under ##)
    header = rows.pop("variant")
    assert header[2:8] == ["mAP50-95", "Δ mAP50-95", "mAP50", "Δ mAP50", "mAP75", "lbox"]
    assert rows["ciou"][2:11] == ["0.3200 ± 0.0283", "ref (ciou)", "0.5300 ± 0.0424", "ref (ciou)",
                                  "0.3300 ± 0.0283", "0.0600", "0.2500", "2.0 min", "2 |"]
    assert rows["giou"][2:11] == ["0.2600 ± 0.0141", "-0.0600", "0.4300 ± 0.0424", "-0.1000",
                                  "0.2200 ± 0.0283", "0.0900", "0.2500", "1.7 min", "2 |"]
    assert rows["diou"][2:11] == ["0.3500", "+0.0300", "0.6000", "+0.0700", "0.3300", "0.0400", "0.2500",
                                  "30 s", "1/2 |"]
    assert [r[1] for r in rows.values()] == ["`loss.box=ciou`", "`loss.box=giou`", "`loss.box=diou`"]
    # what was compared is stated above the table, failures below it
    assert "- base config: `" in md and "yolov5_ciou.yaml" in md
    assert "- common overrides: `train.epochs=2`" in md and "- seeds: 0, 1" in md
    assert "split `val` of `coco128`" in md and "sample standard deviation" in md
    assert f"diou seed 1: failed (see {tmp_path / 'diou' / 'seed1' / 'failed.txt'})" in md
    assert "FloatingPointError" in (tmp_path / "diou" / "seed1" / "failed.txt").read_text()

    table = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert [r["variant"] for r in table] == ["ciou", "giou", "diou"]
    assert float(table[1]["mAP_mean"]) == pytest.approx(0.26) and float(table[1]["mAP_std"]) == pytest.approx(
        math.sqrt(2e-4))
    assert float(table[1]["delta_mAP50"]) == pytest.approx(-0.10)
    assert table[2]["mAP_std"] == "" and table[2]["seeds_done"] == "1" and table[2]["seeds_planned"] == "2"
    assert float(table[0]["train_time_s"]) == pytest.approx(120.0) and float(table[0]["lbox"]) == pytest.approx(0.06)
    runs = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert [(r["variant"], r["seed"], float(r["mAP"])) for r in runs] == [
        ("ciou", "0", 0.30), ("giou", "0", 0.25), ("diou", "0", 0.35), ("ciou", "1", 0.34), ("giou", "1", 0.27)]

    plan = json.loads((tmp_path / "ablation.json").read_text())
    assert plan["runs"][5] == {"variant": "diou", "seed": 1, "run_dir": str(tmp_path / "diou" / "seed1"),
                               "overrides": ["train.epochs=2", "loss.box=diou", "train.seed=1"]}


def test_summary_without_finished_runs_of_the_reference():
    """No result for the first variant: its cells are dashes and nobody gets a delta."""
    variants = [Variant("a", (), "t"), Variant("b", (), "t")]
    rows = summarize(variants, [RunResult("b", 0, {"mAP": 0.4, "mAP50": 0.6, "mAP75": 0.5}, {"lbox": 1.0}, 5.0, [])], 1)
    assert rows[0].metrics == {} and rows[1].deltas == {"mAP": None, "mAP50": None}
    lines = format_markdown_table(rows).splitlines()
    assert lines[2] == "| **a** | (base) | – | ref (a) | – | ref (a) | – | – | – | 0/1 |"
    assert lines[3] == "| b | (base) | 0.4000 | – | 0.6000 | – | 0.5000 | 1.0000 | 5.0 s | 1 |"


# --------------------------------------------------------------------------------------------------
# curves and plots
# --------------------------------------------------------------------------------------------------

def test_epoch_curve_mean_and_band_over_seeds():
    """Seed A evaluated at epochs 5, 10; seed B at 5, 10, 15 (epoch 1 not evaluated: coco null).
    epoch 5: (0.1, 0.2) -> mean 0.15, band 0.1..0.2; epoch 10: (0.3, 0.5) -> 0.4, 0.3..0.5; epoch 15: B only."""
    a = [{"epoch": 1, "coco": None}, {"epoch": 5, "coco": {"mAP": 0.1}}, {"epoch": 10, "coco": {"mAP": 0.3}}]
    b = [{"epoch": 5, "coco": {"mAP": 0.2}}, {"epoch": 10, "coco": {"mAP": 0.5}}, {"epoch": 15, "coco": {"mAP": 0.6}}]
    assert history_values(a, "coco", "mAP") == {5: 0.1, 10: 0.3}
    epochs, mean, lo, hi = epoch_curve([history_values(a, "coco", "mAP"), history_values(b, "coco", "mAP")])
    assert epochs == [5, 10, 15]
    assert mean == pytest.approx([0.15, 0.4, 0.6])
    assert lo == [0.1, 0.3, 0.6] and hi == [0.2, 0.5, 0.6]
    assert epoch_curve([]) == ([], [], [], [])


def test_plots_are_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}, seeds=(0, 1))
    report = ablate(spec, tmp_path, train=FakeTrain(NUMBERS), log=lambda s: None)
    assert write_plots(spec.variants, [], tmp_path / "none") == []  # nothing finished: no empty plots
    for name in ("map_curves.png", "loss_curves.png"):
        assert tmp_path / name in report.files
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_plots_are_skipped_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    one = [RunResult("a", 0, {"mAP": 0.1}, {"lbox": 1.0}, 1.0, [{"epoch": 1, "train": {"lbox": 1.0}, "coco": None}])]
    assert write_plots([Variant("a", (), "t")], one, tmp_path) is None
    logged = []
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}, seeds=(0, 1))
    ablate(spec, tmp_path, train=FakeTrain(NUMBERS), log=logged.append)
    assert sum("matplotlib is not installed" in line for line in logged) == 1
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "summary.md").is_file()


# --------------------------------------------------------------------------------------------------
# skip, resume, stale folders, failures
# --------------------------------------------------------------------------------------------------

def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tmp_path):
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}, seeds=(0, 1))
    runs = plan_runs(spec, tmp_path)
    FakeTrain(NUMBERS)(runs[0].cfg, run_dir=runs[0].run_dir)          # ciou seed 0 finished earlier
    save_config(runs[1].cfg, runs[1].run_dir / "config.yaml")          # giou seed 0 interrupted after an epoch
    (runs[1].run_dir / "last.pt").write_bytes(b"checkpoint")
    assert [run_status(r.run_dir) for r in runs] == ["done", "partial", "new", "new"]

    train = FakeTrain(NUMBERS)
    report = ablate(spec, tmp_path, train=train, log=lambda s: None)
    assert train.calls == [(("giou", 0), "resume"), (("ciou", 1), "new"), (("giou", 1), "new")]
    assert [o.status for o in report.outcomes] == ["done", "resumed", "trained", "trained"]
    assert [len(r.seeds) for r in report.rows] == [2, 2]

    again = FakeTrain(NUMBERS)
    ablate(spec, tmp_path, train=again, log=lambda s: None)
    assert again.calls == []


def test_a_folder_holding_another_config_is_refused_before_training(tmp_path):
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]})
    stale = plan_runs(_spec({"ciou": ["loss.box=ciou"]}, common=("train.epochs=3",)), tmp_path)[0]
    FakeTrain(NUMBERS)(stale.cfg, run_dir=stale.run_dir)
    train = FakeTrain(NUMBERS)
    with pytest.raises(ConfigError, match=r"ciou/seed0 \(variant 'ciou', seed 0\): train\.epochs: 3 in the run "
                                          r"folder, 2 planned"):
        ablate(spec, tmp_path, train=train, log=lambda s: None)
    assert train.calls == []
    # a folder differing from the plan only in keys that do not change results is accepted
    other = plan_runs(_spec({"ciou": ["loss.box=ciou"]}, common=("train.epochs=2", "data.workers=7",
                                                                  "train.name=elsewhere")), tmp_path / "b")[0]
    FakeTrain(NUMBERS)(other.cfg, run_dir=other.run_dir)
    check_existing_runs(plan_runs(_spec({"ciou": ["loss.box=ciou"]}), tmp_path / "b"))


def test_config_differences_lists_changed_keys_and_ignores_bookkeeping():
    planned = {"train": {"epochs": 30, "name": "a", "seed": 0}, "loss": {"box": "ciou"}, "data": {"workers": 2}}
    found = {"train": {"epochs": 60, "name": "b", "seed": 0}, "loss": {"box": {"name": "giou"}}, "data": {"workers": 8}}
    assert config_differences(planned, found) == [
        "train.epochs: 60 in the run folder, 30 planned",
        "loss.box: '<absent>' in the run folder, 'ciou' planned",
        "loss.box.name: 'giou' in the run folder, '<absent>' planned",
    ]
    assert config_differences(planned, planned) == []


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    spec = _spec({"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}, seeds=(0, 1))
    train = FakeTrain(NUMBERS, fail={("ciou", 0)})
    report = ablate(spec, tmp_path, train=train, keep_going=False, log=lambda s: None)
    assert [o.status for o in report.outcomes] == ["failed"] and len(train.calls) == 1
    # the next attempt retries it (no results.json) and clears the failure note once it succeeds
    ablate(spec, tmp_path, train=FakeTrain(NUMBERS), log=lambda s: None)
    assert not (tmp_path / "ciou" / "seed0" / "failed.txt").exists()
    assert run_status(tmp_path / "ciou" / "seed0") == "done"


# --------------------------------------------------------------------------------------------------
# a real tiny ablation
# --------------------------------------------------------------------------------------------------

def test_real_tiny_ablation_two_variants_one_seed(tmp_path, one_thread, capsys):
    spec_file = _write(tmp_path / "tiny.yaml", yaml.safe_dump({
        "base": "yolov5_ciou", "set": TINY, "seeds": [0],
        "variants": {"ciou": ["loss.box=ciou"], "focal_eiou": ["loss.box={name: focal_eiou, gamma: 0.5}"]},
    }))
    out = tmp_path / "out"
    tool = _load_tool()
    assert tool.main(["--spec", str(spec_file), "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    for name in ("ciou", "focal_eiou"):
        result = json.loads((out / name / "seed0" / "results.json").read_text())
        assert len((out / name / "seed0" / "history.jsonl").read_text().splitlines()) == 1
        row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith(f"| {name}")
                   or line.startswith(f"| **{name}**"))
        cells = row.split(" | ")
        assert cells[2] == f"{result['stats']['mAP']:.4f}" and cells[4] == f"{result['stats']['mAP50']:.4f}"
        assert cells[7] == f"{result['train']['lbox']:.4f}"
        assert row in stdout  # the table is printed too
    config = yaml.safe_load((out / "focal_eiou" / "seed0" / "config.yaml").read_text())
    assert config["loss"]["box"] == {"name": "focal_eiou", "gamma": 0.5} and config["data"]["max_images"] == 2
    # running it again trains nothing, and --summary-only rewrites the table from the finished runs
    (out / "summary.md").unlink()
    assert tool.main(["--spec", str(spec_file), "--out", str(out), "--summary-only"]) == 0
    assert "2 done, 0 to resume, 0 to train" in capsys.readouterr().out
    assert (out / "summary.md").is_file()
    # each run saved its final detections: re-scored with pycocotools they give results.json's numbers, and the
    # image bootstrap of the summary starts from their difference on the full evaluation set
    run = plan_runs(load_spec(spec_file), out)[0]
    coco_gt = build_dataset(run.cfg, run.cfg.eval.split).coco_gt()
    maps = {}
    for name in ("ciou", "focal_eiou"):
        image_ids, dets = read_detections(out / name / "seed0" / "detections.json")
        maps[name] = json.loads((out / name / "seed0" / "results.json").read_text())["stats"]["mAP"]
        assert evaluate_coco(coco_gt, dets, image_ids=image_ids)["mAP"] == pytest.approx(maps[name], abs=1e-12)
    assert tool.main(["--spec", str(spec_file), "--out", str(out), "--summary-only", "--bootstrap", "3"]) == 0
    boot = (out / "summary.md").read_text().split("## Evaluation-set bootstrap")[1]
    assert f"| focal_eiou | 1 | {maps['focal_eiou'] - maps['ciou']:+.4f} | [" in boot
    # the error breakdown re-reads the same detections: its mAP50 is results.json's (pycocotools), and its row
    # in summary.md and errors.csv holds each type's gain and count
    errors = (out / "summary.md").read_text().split("## Error breakdown (TIDE, IoU 0.5)")[1]
    rows = list(csv.DictReader(io.StringIO((out / "errors.csv").read_text())))
    for name in ("ciou", "focal_eiou"):
        image_ids, dets = read_detections(out / name / "seed0" / "detections.json")
        b = error_breakdown(coco_gt, dets, image_ids)
        stats = json.loads((out / name / "seed0" / "results.json").read_text())["stats"]
        assert b.ap50 == pytest.approx(stats["mAP50"], abs=1e-9)
        assert f"| {name} | 1 | {b.ap50:.4f} | " + " | ".join(
            f"+{b.delta[k]:.4f} ({b.counts[k]})" for k in ("cls", "loc", "both", "dupe", "bkg", "miss")) in errors
        row = next(r for r in rows if r["variant"] == name)
        assert float(row["gain_loc"]) == b.delta["loc"] and int(row["count_miss"]) == b.counts["miss"]
    report = ablate(load_spec(spec_file), out, train=lambda *a, **k: pytest.fail("trained again"),
                    log=lambda s: None)
    assert [o.status for o in report.outcomes] == ["done", "done"]


def test_real_run_interrupted_after_an_epoch_is_resumed_by_fit(tmp_path, one_thread):
    """fit stopped after epoch 1 of 2 leaves last.pt and no results.json; the ablation resumes it with
    fit(resume=...), and the history holds each epoch once."""
    spec = _spec({"ciou": ["loss.box=ciou"]}, common=(*TINY, "train.epochs=2"))
    run = plan_runs(spec, tmp_path)[0]

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics):
        raise Stop

    with pytest.raises(Stop):
        fit(run.cfg, run_dir=run.run_dir, on_epoch_end=stop_after_first, progress=False)
    assert run_status(run.run_dir) == "partial"
    calls = []

    def recording_fit(cfg, **kwargs):
        calls.append(sorted(kwargs))
        return fit(cfg, **kwargs)

    report = ablate(spec, tmp_path, train=recording_fit, progress=False, log=lambda s: None)
    assert calls == [["progress", "resume"]] and report.outcomes[0].status == "resumed"
    assert [json.loads(x)["epoch"] for x in (run.run_dir / "history.jsonl").read_text().splitlines()] == [1, 2]
    assert report.rows[0].seeds == (0,)
