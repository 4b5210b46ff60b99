#!/usr/bin/env python
"""How exact a training step's gradients are under each precision setting, against float64.

One training batch of the config (augmented as in training), one forward + loss + backward in float64 (the
reference) and under each setting: float32 contiguous, float32 channels_last, bfloat16 autocast (CPU:
``train.cpu_amp``; CUDA: ``train.amp_dtype``), contiguous and channels_last; and, for scale, float64 on the next
batch: how far apart two minibatches' gradients are, the noise SGD works with anyway. Per part of the model
(backbone, neck, head) the table gives the relative error ``|g - g64| / |g64|``, the cosine with the reference
and the norm ratio ``|g| / |g64|``, and the loss's relative error. No speed is measured: this is about what a
speed switch does to the arithmetic (docs/benchmarks.md: CPU bfloat16 autocast's mAP and its gradients).

    python benchmarks/bench_grad_precision.py --cfg demo       # the README demo's model and batch
"""
from __future__ import annotations

import copy

import torch

from _common import base_parser, report, row, setup
from detector import build
from detector.config import load_config
from detector.engine.evaluate import float32_outputs

SETTINGS = {  # name -> (parameter dtype, channels_last, autocast dtype)
    "float32": (torch.float32, False, None),
    "float32, channels_last": (torch.float32, True, None),
    "bfloat16 autocast": (torch.float32, False, torch.bfloat16),
    "bfloat16 autocast, channels_last": (torch.float32, True, torch.bfloat16),
}


def gradients(model, criterion, batch, device, dtype, channels_last, autocast):
    """(loss, {parameter name: gradient as float64}) of one step of a copy of ``model``."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    images = batch.images.to(device, dtype)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    model.train()
    with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        outputs = model(images)
    loss = criterion(float32_outputs(outputs), batch.targets.to(device, dtype))["loss"]
    loss.backward()
    return float(loss), {n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}


def compare(grads: dict, ref: dict) -> dict:
    """Per model part (first name component): relative error, cosine and norm ratio against ``ref``."""
    parts: dict[str, list[float]] = {}
    for name, r in ref.items():
        g = grads[name].cpu().flatten()
        r = r.cpu().flatten()
        acc = parts.setdefault(name.split(".")[0], [0.0, 0.0, 0.0, 0.0])  # |r|^2, |g|^2, g.r, |g - r|^2
        acc[0] += float(r @ r)
        acc[1] += float(g @ g)
        acc[2] += float(g @ r)
        acc[3] += float((g - r) @ (g - r))
    out = {}
    for part, (rr, gg, gr, dd) in parts.items():
        out[f"{part}_rel_err"] = (dd / rr) ** 0.5 if rr > 0 else float("nan")
        out[f"{part}_cos"] = gr / (rr * gg) ** 0.5 if rr > 0 and gg > 0 else float("nan")
        out[f"{part}_norm_ratio"] = (gg / rr) ** 0.5 if rr > 0 else float("nan")
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = base_parser(__doc__)
    p.add_argument("--cfg", default="demo", help="config name or path (default demo)")
    p.add_argument("--batch", type=int, default=1, help="which training batch of epoch 0 (default 1)")
    args = p.parse_args(argv)
    overrides = ["data.workers=0", *args.set]
    if args.smoke:
        overrides = ["data.max_images=2", "train.batch_size=2", "data.img_size=64", "model.width_multiple=0.125",
                     *overrides]
    device = setup(args)
    cfg = load_config(args.cfg, overrides)
    parts = build.build_all(cfg, torch.device("cpu"))
    batches = iter(parts.train_loader)
    for _ in range(min(args.batch, len(parts.train_loader) - 2)):
        next(batches)
    batch = next(batches)
    ref_loss, ref = gradients(parts.model, parts.criterion, batch, torch.device("cpu"), torch.float64, False, None)
    rows = []
    for name, (dtype, channels_last, autocast) in SETTINGS.items():
        if autocast is not None and device.type == "cuda":
            autocast = torch.float16 if cfg.train.amp_dtype == "float16" else torch.bfloat16
            name = name.replace("bfloat16", cfg.train.amp_dtype)
        loss, grads = gradients(parts.model, parts.criterion, batch, device, dtype, channels_last, autocast)
        rows.append(row("gradient vs float64", f"{args.cfg}, batch {cfg.train.batch_size} at {cfg.data.img_size} px: {name}",
                        device, loss_rel_err=abs(loss - ref_loss) / abs(ref_loss), **compare(grads, ref)))
    _, other = gradients(parts.model, parts.criterion, next(batches, batch), torch.device("cpu"), torch.float64,
                         False, None)
    rows.append(row("gradient vs float64", f"{args.cfg}: float64, the next batch (minibatch noise, for scale)",
                    "cpu", loss_rel_err=float("nan"), **compare(other, ref)))
    report(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
