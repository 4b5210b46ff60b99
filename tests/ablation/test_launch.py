"""Launchers (``detector/ablation/launch.py``, ``slurm.py``): ``--jobs 2`` worker processes and submitit's
``LocalExecutor`` (the ``--launcher slurm`` code path, without a cluster) give the same numbers as the runs
trained one after the other in this process; a preempted submitit job is requeued and resumes from ``last.pt``;
and the same seed and config give the same mAP twice in one process (determinism on the CPU)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from detector.ablation import ablate, load_spec, plan_runs, run_status
from detector.ablation.launch import default_threads
from detector.ablation.slurm import parse_parameters, submit_runs, wait_jobs
from detector.config import REPO_ROOT, load_config, save_config
from detector.engine.trainer import fit
from detector.errors import ConfigError

TINY = ["data.max_images=4", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=1", "eval.batch_size=2", "train.device=cpu"]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tool():
    spec = importlib.util.spec_from_file_location("ablate_tool", REPO_ROOT / "tools" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(out: Path) -> dict:
    """Per run folder: results.json's COCO stats and last-epoch loss terms, and the saved detections."""
    found = {}
    for path in sorted(out.glob("*/seed*/results.json")):
        data = json.loads(path.read_text())
        dets = json.loads((path.parent / "detections.json").read_text())["detections"]
        found[str(path.parent.relative_to(out))] = (data["stats"], data["train"], dets)
    return found


def test_jobs_and_submitit_local_give_the_numbers_of_one_process(tmp_path, one_thread):
    """2 variants x 1 seed on 4 coco128 images at 64 px, one epoch, one thread per run. Trained in this process,
    in 2 worker processes and as 2 submitit LocalExecutor jobs, every run ends with bit-identical stats, losses
    and detections: the launcher changes where a run trains, not what it computes."""
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({"base": "yolov5_ciou", "set": TINY, "seeds": [0],
                                         "variants": {"ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}}))
    tool = _tool()
    args = ["--spec", str(spec_file), "--no-progress", "--threads", "1"]
    assert tool.main([*args, "--out", str(tmp_path / "one")]) == 0
    assert tool.main([*args, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    launched = ["two"]
    if importlib.util.find_spec("submitit") is not None:  # the `cluster` extra (CI installs it with `test`)
        assert tool.main([*args, "--out", str(tmp_path / "sub"), "--launcher", "submitit-local"]) == 0
        assert list((tmp_path / "sub" / "submitit").glob("*_result.pkl"))  # it did go through submitit
        launched.append("sub")
    one = _numbers(tmp_path / "one")
    assert sorted(one) == ["ciou/seed0", "giou/seed0"]
    for out in launched:  # same numbers; the plan file and the summary are written as with one process
        assert _numbers(tmp_path / out) == one
        assert json.loads((tmp_path / out / "ablation.json").read_text())["variants"] == {
            "ciou": ["loss.box=ciou"], "giou": ["loss.box=giou"]}
        assert "## Error breakdown" in (tmp_path / out / "summary.md").read_text()
    # finished runs are skipped by every launcher
    logged = []
    report = ablate(load_spec(spec_file), tmp_path / "two", jobs=2, threads=1, log=logged.append)
    assert [o.status for o in report.outcomes] == ["done", "done"] and "processes" not in " ".join(logged)


def _preemptible_train(cfg, run_dir=None, resume=None, progress=True):
    """A new run writes config.yaml and last.pt, then waits to be preempted (at most 60 s); a resumed run
    writes results.json. Every call is appended to calls.txt in the run folder."""
    run_dir = Path(resume).parent if resume is not None else Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.txt", "a") as f:
        f.write(("resume" if resume is not None else "new") + "\n")
    if resume is None:
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "last.pt").write_bytes(b"epoch 1")
        (run_dir / "pid.txt").write_text(str(os.getpid()))  # where the test sends SLURM's preemption signal
        for _ in range(600):
            time.sleep(0.1)
        raise TimeoutError("not preempted within 60 s")
    (run_dir / "results.json").write_text(json.dumps({"stats": {"mAP": 0.5}, "train": {}, "train_time_s": 1.0}))
    return {}


def test_a_preempted_submitit_job_is_requeued_and_resumes_from_last_pt(tmp_path):
    """The LocalExecutor job's process gets the signal SLURM sends before preempting a job (USR2) once last.pt
    exists; submitit calls the callable's checkpoint(), requeues it, and the requeued job finds last.pt and
    resumes (train called with resume=last.pt)."""
    submitit = pytest.importorskip("submitit")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this test file
    spec = load_spec_inline(tmp_path)
    runs = plan_runs(spec, tmp_path / "out")
    executor = submitit.LocalExecutor(folder=str(tmp_path / "out" / "submitit"))
    executor.update_parameters(timeout_min=5)
    _, jobs = submit_runs(executor, runs, _preemptible_train, log=lambda s: None)
    assert len(jobs) == 1

    def preempt_when_checkpointed():
        pid_file = runs[0].run_dir / "pid.txt"
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                time.sleep(0.5)  # let the job reach its wait
                os.kill(int(pid_file.read_text()), submitit.JobEnvironment._usr_sig())
                return
            time.sleep(0.1)

    thread = threading.Thread(target=preempt_when_checkpointed)
    thread.start()
    outcomes = wait_jobs(runs, jobs, log=lambda s: None)
    thread.join()
    assert [o.status for o in outcomes] == ["resumed"], outcomes[0].error
    assert (runs[0].run_dir / "calls.txt").read_text().split() == ["new", "resume"]
    assert run_status(runs[0].run_dir) == "done"


def load_spec_inline(tmp_path: Path):
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"base": "yolov5_ciou", "set": ["train.epochs=1"], "seeds": [0],
                                    "variants": {"ciou": ["loss.box=ciou"]}}))
    return load_spec(path)


def test_launcher_arguments_and_thread_split(tmp_path):
    assert parse_parameters(["slurm_partition=gpu", "timeout_min=600", "gpus_per_node=1"]) == {
        "slurm_partition": "gpu", "timeout_min": 600, "gpus_per_node": 1}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_parameters(["gpu"])
    assert default_threads(1) >= default_threads(2) >= 1 and default_threads(10_000) == 1
    spec = load_spec_inline(tmp_path)
    with pytest.raises(ConfigError, match="valid: local, slurm, submitit-local"):
        ablate(spec, tmp_path / "x", launcher="pbs", train=lambda *a, **k: pytest.fail("trained"), log=print)
    with pytest.raises(ConfigError, match=">= 1"):
        ablate(spec, tmp_path / "x", jobs=0, train=lambda *a, **k: pytest.fail("trained"), log=print)


def test_same_seed_and_config_give_the_same_map_twice_in_one_process(tmp_path, one_thread):
    """Determinism on the CPU: two fresh trainings of one config and seed end with identical COCO stats and
    loss terms (every generator is re-seeded from (seed, epoch); torch's CPU kernels give the same sums at a
    fixed thread count on one machine). Another seed changes the losses, so the comparison can fail."""
    cfg = load_config("yolov5_ciou", [*TINY, "train.seed=0"])
    fit(cfg, run_dir=tmp_path / "a", progress=False)
    fit(cfg, run_dir=tmp_path / "b", progress=False)
    fit(load_config("yolov5_ciou", [*TINY, "train.seed=1"]), run_dir=tmp_path / "c", progress=False)
    a, b, c = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b", "c"))
    assert a["stats"] == b["stats"] and a["train"] == b["train"]
    assert (tmp_path / "a" / "detections.json").read_text() == (tmp_path / "b" / "detections.json").read_text()
    assert c["train"] != a["train"]
