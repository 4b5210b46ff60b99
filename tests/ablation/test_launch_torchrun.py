"""Runs of several processes each (``--nproc-per-run``): the torchrun command of a run (``detector/ablation/
torchrun.py``), the GPU split between concurrent runs, the SLURM task -> torch environment mapping and executor
parameters (``slurm.py``), the report's processes line, and one real 2-process CPU run through ``tools/ablate.py``."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.distributed.run
import yaml

from detector.ablation import ablate, load_spec, plan_runs
from detector.ablation import torchrun as tr
from detector.ablation.plan import PlannedRun
from detector.ablation.report import processes_line
from detector.ablation.slurm import SubmititRun, distributed_parameters, first_host, torch_env_from_job
from detector.ablation.spec import Variant
from detector.config import REPO_ROOT
from detector.engine.distributed import DistContext, context_from_env
from detector.errors import ConfigError

TINY = ["data.max_images=4", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=1", "eval.batch_size=2", "train.device=cpu"]
TORCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(tmp_path: Path, extra: tuple[str, ...] = ()):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": "yolov5_ciou", "set": [*TINY, *extra], "seeds": [0],
                                    "variants": {"ciou": ["loss.box=ciou"]}}))
    return load_spec(path)


# ---------------------------------------------------------------------------------------------- the command
def test_torchrun_command_of_a_new_and_of_an_interrupted_run():
    """Hand-written argv: torchrun's options, then tools/train.py's; ``--set`` last, one override per item (a YAML
    value with spaces stays one item). torchrun's own parser and tools/train.py's read them back as meant."""
    overrides = ["train.epochs=1", "loss.box={name: focal_eiou, gamma: 0.5}", "train.seed=3"]
    new = tr.torchrun_command("/cfg/base.yaml", overrides, Path("out/ciou/seed3"), 2, False, python="py",
                              script="tools/train.py")
    assert new == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tools/train.py",
                   "--cfg", "/cfg/base.yaml", "--run-dir", "out/ciou/seed3", "--no-progress",
                   "--set", "train.epochs=1", "loss.box={name: focal_eiou, gamma: 0.5}", "train.seed=3"]
    resume = tr.torchrun_command("/cfg/base.yaml", overrides, Path("out/ciou/seed3"), 4, True, python="py",
                                 script="tools/train.py")
    assert resume == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "tools/train.py",
                      "--resume", str(Path("out/ciou/seed3/last.pt")), "--no-progress"]
    launcher = torch.distributed.run.get_args_parser().parse_args(new[3:])
    assert launcher.standalone and launcher.nproc_per_node == "2" and launcher.training_script == "tools/train.py"
    args = _tool("train").parse_args(launcher.training_script_args)
    assert (args.cfg, args.run_dir, args.set, args.no_progress) == ("/cfg/base.yaml", "out/ciou/seed3", overrides, True)
    assert tr.torchrun_command("b.yaml", [], "d", 2, False)[-1] == "--set"  # no override: --set takes nothing
    assert _tool("train").parse_args(["--cfg", "b.yaml", "--set"]).set == []


def test_gpus_split_between_concurrent_runs_and_the_run_environment(monkeypatch):
    assert tr.gpu_groups(["0", "1", "2", "3"], 2, 2) == [("0", "1"), ("2", "3")]
    assert tr.gpu_groups(["4", "5", "6"], 1, 2) == [("4", "5")]  # one GPU left idle
    assert tr.gpu_groups([], 3, 2) == [(), (), ()]  # CPU ranks
    with pytest.raises(ConfigError, match="need 4 GPUs, 3 visible"):
        tr.gpu_groups(["0", "1", "2"], 2, 2)
    assert tr.run_env({"PATH": "/bin"}, ("2", "3"), 4) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2,3",
                                                          "OMP_NUM_THREADS": "4"}
    assert tr.run_env({"PATH": "/bin"}, (), None) == {"PATH": "/bin"}
    gpu, cpu = (SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(device=d))) for d in ("auto", "cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert tr.cuda_gpus([gpu], {"CUDA_VISIBLE_DEVICES": "3,5,7"}) == ["3", "5", "7"]  # the parent's names
    assert tr.cuda_gpus([gpu, cpu], {}) == ["0", "1", "2"]
    assert tr.cuda_gpus([cpu], {}) == []  # every run on the CPU: no GPU handed out


def test_nproc_is_checked_before_anything_trains(tmp_path):
    """train.batch_size 2 splits over 2 ranks, not 4; a fixed cuda:1 cannot be every rank's device."""
    spec = _spec(tmp_path)
    runs = plan_runs(spec, tmp_path / "out")
    tr.check_nproc(runs, 1)
    tr.check_nproc(runs, 2)
    with pytest.raises(ConfigError, match=r"variant 'ciou'.*train\.batch_size.*multiple of 4"):
        tr.check_nproc(runs, 4)
    with pytest.raises(ConfigError, match=">= 1"):
        tr.check_nproc(runs, 0)
    with pytest.raises(ConfigError, match=r"train\.device.*cuda:LOCAL_RANK"):
        tr.check_nproc(plan_runs(_spec(tmp_path, ("train.device=cuda:1",)), tmp_path / "out"), 2)
    with pytest.raises(ConfigError, match="multiple of 4"):
        ablate(spec, tmp_path / "out", nproc=4, log=lambda s: None)
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(ValueError, match="leave train None"):
        ablate(spec, tmp_path / "out", nproc=2, train=lambda *a, **k: pytest.fail("trained"), log=lambda s: None)


# ---------------------------------------------------------------------------------------------- one run, faked
def _planned(tmp_path: Path) -> PlannedRun:
    return PlannedRun(Variant("ciou", ("loss.box=ciou",), "t"), 0, ("loss.box=ciou", "train.seed=0"), None,
                      tmp_path / "ciou" / "seed0")


def test_a_run_is_started_resumed_skipped_or_failed_by_what_its_folder_holds(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env, stdout, stderr, stdin):
        calls.append((cmd, env))
        stdout.write("rank 0 output\nlast words\n")
        if "fail" in env:
            return SimpleNamespace(returncode=1)
        (run.run_dir / "results.json").write_text("{}")
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(tr.subprocess, "run", fake_run)
    run = _planned(tmp_path)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "failed.txt").write_text("an earlier failure")
    assert tr.train_one_torchrun(run, "/b.yaml", 2, ("2", "3"), 3) == ("trained", None)
    cmd, env = calls[-1]
    assert cmd[cmd.index("--run-dir") + 1] == str(run.run_dir) and cmd[-2:] == ["loss.box=ciou", "train.seed=0"]
    assert (env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"]) == ("2,3", "3")
    assert not (run.run_dir / "failed.txt").exists()
    assert (run.run_dir / "torchrun.log").read_text().startswith("$ " + " ".join(cmd) + "\n")

    assert tr.train_one_torchrun(run, "/b.yaml", 2) == ("done", None) and len(calls) == 1
    (run.run_dir / "results.json").unlink()
    (run.run_dir / "last.pt").write_bytes(b"epoch 1")
    assert tr.train_one_torchrun(run, "/b.yaml", 2) == ("resumed", None)
    assert calls[-1][0][-3:] == ["--resume", str(run.run_dir / "last.pt"), "--no-progress"]

    (run.run_dir / "results.json").unlink()
    monkeypatch.setenv("fail", "1")
    status, error = tr.train_one_torchrun(run, "/b.yaml", 2)
    assert (status, error) == ("failed", "torchrun exited with status 1: last words")
    failed = (run.run_dir / "failed.txt").read_text()
    assert "exit status: 1" in failed and "--resume" in failed and failed.rstrip().endswith("last words")


# ---------------------------------------------------------------------------------------------- SLURM
SLURM = {"SLURM_JOB_ID": "1234567", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3",
         "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "gpu[03-05,07]"}


def test_slurm_task_to_torch_environment():
    """Port: 20000 + 1234567 mod 40000 = 20000 + 34567 (1234567 - 30 x 40000) = 54567. Two nodes of 4 tasks:
    task 5 is local rank 1 of 4; the master is the first node."""
    assert torch_env_from_job(SLURM) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4",
                                         "MASTER_ADDR": "gpu03", "MASTER_PORT": "54567"}
    two = {**SLURM, "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "a7,a8", "MASTER_PORT": "29500"}
    assert torch_env_from_job(two) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                                       "MASTER_ADDR": "a7", "MASTER_PORT": "29500"}
    local = {"SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
             "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}
    assert torch_env_from_job(local) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "24242"}
    assert torch_env_from_job({"PATH": "/bin"}) == {}
    assert context_from_env(torch_env_from_job(SLURM)) == DistContext(3, 4, 3)  # what fit reads back
    assert [first_host(s) for s in ("gpu[03-05,07],cpu1", "a7,a8", "n[1-2]-ib", "solo", "")] == \
        ["gpu03", "a7", "n1-ib", "solo", ""]


def test_the_mapping_agrees_with_submitits_own(monkeypatch):
    """submitit.helpers.TorchDistributedEnvironment reads the same SLURM variables (its port is drawn differently)."""
    submitit = pytest.importorskip("submitit")
    for key, value in {**SLURM, "SUBMITIT_EXECUTOR": "slurm"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    ref = submitit.helpers.TorchDistributedEnvironment()
    ours = torch_env_from_job(os.environ)
    assert (ours["MASTER_ADDR"], ours["RANK"], ours["WORLD_SIZE"], ours["LOCAL_RANK"], ours["LOCAL_WORLD_SIZE"]) == \
        (ref.master_addr, str(ref.rank), str(ref.world_size), str(ref.local_rank), str(ref.local_world_size))


def test_a_submitit_task_trains_as_its_rank_and_only_rank_0_records_a_failure(tmp_path, monkeypatch):
    for key in TORCH_KEYS:
        monkeypatch.setenv(key, "unset")  # restored after the test, whatever SubmititRun exports
    monkeypatch.delenv("MASTER_PORT")
    seen = []

    def failing_train(cfg, run_dir=None, resume=None, progress=True):
        seen.append({k: os.environ[k] for k in TORCH_KEYS})
        raise RuntimeError("diverged")

    run = _planned(tmp_path)
    for rank in ("1", "0"):
        for key, value in {**SLURM, "SLURM_PROCID": rank, "SLURM_LOCALID": rank}.items():
            monkeypatch.setenv(key, value)
        assert SubmititRun(run, failing_train)() == ("failed", "RuntimeError: diverged")
        assert (run.run_dir / "failed.txt").exists() == (rank == "0")
    assert [s["RANK"] for s in seen] == ["1", "0"] and seen[0]["MASTER_ADDR"] == "gpu03"
    assert {s["MASTER_PORT"] for s in seen} == {"54567"} and {s["WORLD_SIZE"] for s in seen} == {"4"}


def test_executor_parameters_for_runs_of_several_processes():
    assert distributed_parameters({"slurm_partition": "gpu"}, 4, True) == {
        "slurm_partition": "gpu", "nodes": 1, "tasks_per_node": 4, "gpus_per_node": 4}
    assert distributed_parameters({"tasks_per_node": 2}, 2, False) == {"nodes": 1, "tasks_per_node": 2}
    assert distributed_parameters({"gpus_per_node": 8}, 1, True) == {"gpus_per_node": 8}  # one process: untouched
    with pytest.raises(ConfigError, match="gpus_per_node=1 contradicts --nproc-per-run 4"):
        distributed_parameters({"gpus_per_node": 1}, 4, True)
    with pytest.raises(ConfigError, match="gpus_per_task"):
        distributed_parameters({"gpus_per_task": 1}, 2, True)


def test_processes_line_of_the_report():
    assert processes_line([]) is None and processes_line([1, 1]) is None
    assert processes_line([2, 2]).startswith("- processes per run: 2 (data-parallel")
    assert processes_line([2, 1, 2]).startswith("- processes per run: **differ** (1 for 1 run(s), 2 for 2 run(s);")


# ---------------------------------------------------------------------------------------------- one real run
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend in this build")
def test_a_cell_trains_under_torchrun_with_two_cpu_processes(tmp_path):
    """1 variant x 1 seed, 4 coco128 images at 64 px, global batch 2 (one image per rank), one epoch, through
    ``tools/ablate.py --nproc-per-run 2``: the run folder is a complete fit run of world size 2, the plan and the
    report say 2 processes per run."""
    _spec(tmp_path)
    out = tmp_path / "out"
    code = _tool("ablate").main(["--spec", str(tmp_path / "tiny.yaml"), "--out", str(out), "--no-progress",
                                 "--threads", "1", "--nproc-per-run", "2"])
    run_dir = out / "ciou" / "seed0"
    assert code == 0, (run_dir / "failed.txt").read_text() if (run_dir / "failed.txt").exists() else code
    result = json.loads((run_dir / "results.json").read_text())
    assert result["world_size"] == 2 and set(result["stats"]) >= {"mAP", "mAP50"}
    assert {"config.yaml", "last.pt", "history.jsonl", "detections.json", "torchrun.log"} <= \
        {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "rank1").exists()
    assert "--nproc_per_node=2" in (run_dir / "torchrun.log").read_text()
    assert json.loads((out / "ablation.json").read_text())["nproc_per_run"] == 2
    summary = (out / "summary.md").read_text()
    assert "- processes per run: 2 (" in summary and "| **ciou** |" in summary
    # a run that lost its results.json after its last epoch (as a requeued job finds it) resumes from last.pt
    (run_dir / "results.json").unlink()
    logged = []
    report = ablate(load_spec(tmp_path / "tiny.yaml"), out, threads=1, nproc=2, progress=False, log=logged.append)
    assert [o.status for o in report.outcomes] == ["resumed"], report.outcomes[0].error
    assert "--resume " + str(run_dir / "last.pt") in (run_dir / "torchrun.log").read_text()
    again = json.loads((run_dir / "results.json").read_text())
    assert again["stats"] == result["stats"] and again["world_size"] == 2
