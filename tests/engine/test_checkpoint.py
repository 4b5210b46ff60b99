"""Tests for detector/engine/checkpoint.py and detector/engine/rng.py.

Atomic writes, weights_only-safe loading with clear errors, the full checkpoint contract surviving a round
trip, and RNG capture / restore / seeding.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from detector.engine.checkpoint import (
    CHECKPOINT_KEYS,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointNotFoundError,
    find_unsafe_value,
    load_checkpoint,
    save_checkpoint,
)
from detector.engine.ema import ModelEMA
from detector.engine.optim import build_optimizer
from detector.engine.rng import get_rng_state, seed_everything, set_rng_state

UNPICKLE_CALLS: list[str] = []


def _record_unpickle(tag: str) -> str:
    UNPICKLE_CALLS.append(tag)
    return tag


class Payload:
    """Unpickling this object would call _record_unpickle: the side effect a weights_only load must prevent."""

    def __reduce__(self):
        return (_record_unpickle, ("payload ran",))


def tiny_model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 2, 1))


def full_checkpoint(epoch: int = 3) -> tuple[dict, nn.Module, torch.optim.Optimizer]:
    """A checkpoint with every contract key filled from real objects after one training step."""
    torch.manual_seed(0)
    model = tiny_model()
    opt = build_optimizer(model, "sgd", lr=0.01, momentum=0.937, weight_decay=5e-4)
    ema = ModelEMA(model, decay=0.9, tau=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = model(torch.randn(2, 3, 8, 8)).square().mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    ema.update(model)
    state = {
        "model": model.state_dict(),
        "ema": ema.module.state_dict(),
        "ema_updates": ema.updates,
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_fitness": 0.125,
        "config": {"model": {"name": "yolov5n", "anchors": [[10, 13], [16, 30]]}, "train": {"epochs": 10}},
        "rng": get_rng_state(),
        "version": CHECKPOINT_VERSION,
        "metrics": {"mAP50": 0.5, "mAP50_95": 0.25, "per_class": [0.1, 0.2]},
    }
    return state, model, opt


def test_full_contract_round_trip_and_resume(tmp_path):
    state, model, opt = full_checkpoint()
    assert set(state) == set(CHECKPOINT_KEYS)
    path = save_checkpoint(tmp_path / "run" / "last.pt", state)  # parent directory is created
    loaded = load_checkpoint(path)
    assert set(loaded) == set(CHECKPOINT_KEYS)
    assert loaded["epoch"] == 3 and loaded["ema_updates"] == 1 and loaded["best_fitness"] == 0.125
    assert loaded["config"] == state["config"] and loaded["metrics"] == state["metrics"]
    assert loaded["scaler"] == state["scaler"] and loaded["scaler"]["scale"] == 1024.0
    for key, value in state["model"].items():
        torch.testing.assert_close(loaded["model"][key], value, rtol=0, atol=0)
    for key, value in state["ema"].items():
        torch.testing.assert_close(loaded["ema"][key], value, rtol=0, atol=0)
    # resume: a fresh model and optimizer take the saved state and match the originals exactly
    model2 = tiny_model()
    model2.load_state_dict(loaded["model"])
    opt2 = build_optimizer(model2, "sgd", lr=0.01, momentum=0.937, weight_decay=5e-4)
    opt2.load_state_dict(loaded["optimizer"])
    assert [g["name"] for g in opt2.param_groups] == [g["name"] for g in opt.param_groups]
    buffers = [opt.state[p]["momentum_buffer"] for g in opt.param_groups for p in g["params"]]
    buffers2 = [opt2.state[p]["momentum_buffer"] for g in opt2.param_groups for p in g["params"]]
    for a, b in zip(buffers, buffers2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob("run/.*.tmp"))  # no temporary file left behind


def test_save_is_atomic_when_write_crashes(tmp_path, monkeypatch):
    """A torch.save that writes some bytes and then raises leaves the previous file loadable and no temp file."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(5.0)})
    original_bytes = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(5)})
    monkeypatch.undo()
    assert path.read_bytes() == original_bytes
    old = load_checkpoint(path, required_keys=())
    assert old["epoch"] == 1
    torch.testing.assert_close(old["w"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(str(path), {"epoch": 2})
    assert load_checkpoint(path, required_keys=())["epoch"] == 2


def test_load_refuses_pickled_code(tmp_path):
    """A file holding a custom object (written with plain torch.save) is refused and its code never runs."""
    path = tmp_path / "evil.pt"
    state, _, _ = full_checkpoint()
    state["metrics"] = {"mAP50": Payload()}
    torch.save(state, path)
    UNPICKLE_CALLS.clear()
    with pytest.raises(CheckpointError, match="refusing to load checkpoint .*evil.pt") as info:
        load_checkpoint(path)
    assert "weights_only" in str(info.value)
    assert UNPICKLE_CALLS == []


def test_save_refuses_values_that_would_not_load(tmp_path):
    """numpy scalars are the usual mistake in metrics; the error names the key path and nothing is written."""
    path = tmp_path / "last.pt"
    with pytest.raises(TypeError, match=r"checkpoint\['metrics'\]\['mAP'\]: numpy.float64"):
        save_checkpoint(path, {"metrics": {"mAP": np.float64(0.5)}})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    assert find_unsafe_value({"a": [1, (2.0, None)], "b": torch.ones(1), "c": torch.float16}) is None
    found = find_unsafe_value({"a": [1, {"b": Payload()}]})
    assert found.startswith("checkpoint['a'][1]['b']: ") and found.endswith(".Payload")


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointNotFoundError, match="nope.pt does not exist"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello world, not a checkpoint", "truncated"])
def test_load_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_checkpoint(path, {"w": torch.arange(1000.0)})
        content = path.read_bytes()[:400]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"checkpoint file {path}"):
        load_checkpoint(path)


def test_load_not_a_checkpoint_lists_missing_keys(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 0}, path)
    with pytest.raises(CheckpointError, match=r"weights.pt is not a detector training checkpoint") as info:
        load_checkpoint(path)
    message = str(info.value)
    for key in set(CHECKPOINT_KEYS) - {"model", "epoch"}:
        assert repr(key) in message
    assert load_checkpoint(path, required_keys=("model",))["epoch"] == 0
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="holds a list, expected a dict"):
        load_checkpoint(path, required_keys=())


def test_load_refuses_newer_version(tmp_path):
    state, _, _ = full_checkpoint()
    state["version"] = CHECKPOINT_VERSION + 1
    path = save_checkpoint(tmp_path / "future.pt", state)
    with pytest.raises(CheckpointError, match=f"version {CHECKPOINT_VERSION + 1}"):
        load_checkpoint(path)


def draws() -> tuple:
    """Draws from all three generators, including the gaussian paths that cache a second value."""
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [float(np.random.standard_normal())],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_rng_round_trip_through_checkpoint(tmp_path):
    """Capture mid-stream (with cached gaussians pending), save, draw, restore from file: the same draws repeat."""
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    random.gauss(0, 1)  # leaves gauss_next cached
    np.random.standard_normal()  # leaves numpy's cached gaussian (has_gauss = 1)
    state = get_rng_state()
    assert state["numpy"]["has_gauss"] == 1 and state["python"]["gauss_next"] is not None
    assert find_unsafe_value(state) is None
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    first = draws()
    second = draws()
    assert first != second  # the generators really advance
    set_rng_state(load_checkpoint(path, required_keys=("rng",))["rng"])
    assert draws() == first
    assert draws() == second


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip(tmp_path):
    torch.cuda.manual_seed_all(5)
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": get_rng_state()})
    first = torch.rand(4, device="cuda").tolist()
    set_rng_state(load_checkpoint(path, required_keys=("rng",))["rng"])
    assert torch.rand(4, device="cuda").tolist() == first


def test_set_rng_state_requires_all_generators():
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state({"python": get_rng_state()["python"], "torch": torch.get_rng_state()})


@pytest.fixture
def restore_determinism_flags():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


def test_seed_everything_repeats_draws_and_sets_flags(restore_determinism_flags):
    seed_everything(7, deterministic=True)
    first = draws()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    seed_everything(7, deterministic=False)
    assert draws() == first
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    seed_everything(8, deterministic=False)
    assert draws() != first


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seed_everything_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        seed_everything(seed)


@pytest.mark.parametrize("content,said", [
    (b"model: yolov5\nepochs: 3\n", "text file starting 'model: yolov5'"),  # a config passed by mistake
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "bytes"),  # a JPEG
])
def test_a_file_that_is_not_a_checkpoint_is_named_without_weights_only_advice(tmp_path, content, said):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "is not a torch checkpoint" in message and said in message
    assert "weights_only" not in message


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_checkpoint_mode_follows_the_umask_like_open(tmp_path, umask, mode):
    """A file made by open() under umask u has mode 0o666 & ~u: 022 -> 644, 027 -> 640, 077 -> 600."""
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(2)})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == mode == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert torch.equal(load_checkpoint(path, required_keys=())["w"], torch.ones(2))
