"""``train.compile``: the training step calls ``torch.compile(model)``; everything else keeps the plain model.

* wiring (CI): ``torch.compile`` replaced by a wrapper that records its calls and forwards unchanged. The run must
  call the wrapper for every training forward and never for evaluation, end with the same weights as the run
  without ``train.compile`` (the wrapper computes the same thing, so any difference would come from state the
  trainer kept on the wrong object), and write checkpoints whose keys have no ``_orig_mod.`` prefix.
* the real thing (``-m slow``: inductor compiles for over a minute on 2 cores): two training steps of a tiny
  model compiled and eager, the same batches: equal losses, and weight updates equal to 1% of their size.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detector import build
from detector.config import load_config
from detector.engine.checkpoint import load_checkpoint
from detector.engine.precision import training_model
from detector.engine.trainer import fit

TINY = ["data.max_images=4", "data.img_size=64", "data.workers=0", "train.batch_size=2", "train.nbs=2",
        "train.epochs=2", "train.eval_interval=2", "train.warmup_epochs=0", "eval.batch_size=4",
        "model.width_multiple=0.125", "model.depth_multiple=0.33"]


class RecordingCompile(nn.Module):
    """Stands in for torch.compile's OptimizedModule: holds ``_orig_mod`` and counts forward calls."""

    calls = 0
    built: list[nn.Module] = []

    def __init__(self, module: nn.Module):
        super().__init__()
        self._orig_mod = module
        RecordingCompile.built.append(module)

    def forward(self, *args, **kwargs):
        RecordingCompile.calls += 1
        return self._orig_mod(*args, **kwargs)


def test_training_model_compiles_only_when_asked(monkeypatch):
    monkeypatch.setattr(torch, "compile", RecordingCompile)
    model = nn.Linear(2, 2)
    assert training_model(model, load_config("demo").train) is model
    wrapped = training_model(model, load_config("demo", ["train.compile=true"]).train)
    assert isinstance(wrapped, RecordingCompile) and wrapped._orig_mod is model


def test_compiled_training_forward_and_plain_checkpoints(tmp_path, monkeypatch):
    plain = fit(load_config("yolov5_ciou", TINY), run_dir=tmp_path / "plain", progress=False)
    RecordingCompile.calls, RecordingCompile.built = 0, []
    monkeypatch.setattr(torch, "compile", RecordingCompile)
    compiled = fit(load_config("yolov5_ciou", TINY + ["train.compile=true"]), run_dir=tmp_path / "compiled",
                   progress=False)
    assert len(RecordingCompile.built) == 1
    assert RecordingCompile.calls == 2 * 2  # 2 epochs x 2 batches of 2 images; evaluation used the plain EMA model
    a, b = load_checkpoint(tmp_path / "plain" / "last.pt"), load_checkpoint(tmp_path / "compiled" / "last.pt")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys() and not any("_orig_mod" in k for k in b[key])
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert plain["coco"] == compiled["coco"]


@pytest.mark.slow
def test_torch_compile_trains_like_eager():
    from detector.engine.evaluate import float32_outputs

    torch.manual_seed(0)
    cfg = load_config("yolov5_ciou", TINY)
    parts = build.build_all(cfg, torch.device("cpu"))
    batches = list(parts.train_loader)
    eager = parts.model
    twin = build.build_model(cfg, parts.num_classes)
    twin.load_state_dict(eager.state_dict())
    build.link_class_rows(twin, parts.criterion)
    compiled = torch.compile(twin)
    start = [p.detach().clone() for p in eager.parameters()]
    results = []
    for model, params in ((eager, eager.parameters()), (compiled, twin.parameters())):
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        losses = []
        for batch in batches:
            optimizer.zero_grad()
            loss = parts.criterion(float32_outputs(model(batch.images)), batch.targets)["loss"]
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        results.append(losses)
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=0)
    # The updates agree to a percent of their size in every tensor: gradients of fused kernels differ by about 1e-3
    # relative (summation order; channels_last alone gives 4e-3, docs/benchmarks.md), a wrong gradient by far more.
    for p, q, p0 in zip(eager.parameters(), twin.parameters(), start):
        step = (p - p0).norm()
        assert (q - p).norm() <= 0.01 * step + 1e-7, float((q - p).norm() / step)
