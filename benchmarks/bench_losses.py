"""Time every box and classification loss, forward and forward + backward, on a realistic set of pairs.

The pairs imitate the positives of YOLOv5 training batches: the ground-truth boxes of ``--batch`` coco128 images
(YOLO txt labels, scaled to a square ``--image-size`` input), each replicated as often as needed for ``--pairs``
pairs (10,000 by default; YOLOv5's assigner gives a ground truth about 3 anchors x 3 cells), with predictions made
by jittering the ground truth (centre shift and log-size noise of ``--jitter`` relative to its size). Boxes are
passed in grid units of stride 8, as the criterion would for the finest level. Classification losses see the class
logits of those pairs, ``[pairs, 80]`` with one-hot targets (the ranking losses ap and dr therefore rank
pairs x 80 elements, not every prior of a batch).

Every name of ``BOX`` and ``CLS`` is timed as the criterion calls it: through its :class:`LossSpec` with the
default parameters (a stateful loss, ``wiou`` or ``ghm``, as a fresh instance in training mode, so its state update
is timed too), with ``image_size`` or ``pred_log_var`` where the loss takes it. The output is a markdown table.

    python benchmarks/bench_losses.py --repeat 20 [--device cuda] [--pairs 10000] [--json PATH] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _common import row, write_json
from detector.losses.box import BOX
from detector.losses.classification import CLS
from detector.losses.spec import parse_loss_spec

ROOT = Path(__file__).resolve().parents[1]
LABEL_DIRS = (ROOT / "data/coco128/labels/train2017", ROOT.parent / "shared/data/coco128/labels/train2017")
NUM_CLASSES = 80


def find_label_dir(explicit: str | None) -> Path:
    """The coco128 YOLO label folder: ``--labels``, else the project's data/, else ../shared/data/."""
    candidates = (Path(explicit),) if explicit else LABEL_DIRS
    for path in candidates:
        if path.is_dir() and any(path.glob("*.txt")):
            return path
    raise SystemExit(f"bench_losses: no YOLO label folder found; tried {', '.join(map(str, candidates))} "
                     "(pass --labels DIR)")


def load_boxes(label_dir: Path, num_images: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """First ``num_images`` non-empty label files -> (boxes Tensor[n, 4] xyxy px, classes Tensor[n], images used)."""
    boxes, classes, used = [], [], 0
    for path in sorted(label_dir.glob("*.txt")):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        t = torch.tensor([[float(v) for v in r[:5]] for r in rows])  # (k, 5) class cx cy w h, normalised
        cxcy, wh = t[:, 1:3] * image_size, t[:, 3:5] * image_size
        boxes.append(torch.cat((cxcy - wh / 2, cxcy + wh / 2), 1))
        classes.append(t[:, 0].long())
        used += 1
        if used == num_images:
            break
    return torch.cat(boxes), torch.cat(classes), used


def make_pairs(boxes: torch.Tensor, pairs: int, jitter: float, stride: float, generator: torch.Generator):
    """Replicate the gts to ``pairs`` rows and jitter the copies into predictions; both in grid units.

    Returns (pred Tensor[N, 4], target Tensor[N, 4], gt index Tensor[N]) with ``N = pairs``.
    """
    index = torch.arange(pairs) % boxes.shape[0]  # (N,)
    target = boxes[index]  # (N, 4) px
    centre, size = (target[:, :2] + target[:, 2:]) / 2, (target[:, 2:] - target[:, :2]).clamp(min=1)
    centre = centre + torch.randn(centre.shape, generator=generator) * jitter * size
    size = size * torch.exp(torch.randn(size.shape, generator=generator) * jitter)
    pred = torch.cat((centre - size / 2, centre + size / 2), 1)
    return pred / stride, target / stride, index


def time_call(fn, repeat: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(name: str, loss_fn, inputs: tuple, kwargs: dict, repeat: int, warmup: int, device: torch.device):
    """(forward ms, forward + backward ms) of ``loss_fn(*inputs, **kwargs).sum()``; the first input learns."""

    def forward():
        return loss_fn(*inputs, reduction="none", **kwargs).sum()

    def forward_backward():
        inputs[0].grad = None
        forward().backward()

    return time_call(forward, repeat, warmup, device), time_call(forward_backward, repeat, warmup, device)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="coco128 images whose boxes make the pairs")
    parser.add_argument("--pairs", type=int, default=10_000, help="box pairs (and rows of 80 class logits)")
    parser.add_argument("--jitter", type=float, default=0.15, help="prediction noise relative to the box size")
    parser.add_argument("--image-size", type=int, default=640, help="square network input side in pixels")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per loss (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--labels", default=None, help="YOLO label folder (default: coco128 in data/ or ../shared)")
    parser.add_argument("--only", nargs="*", default=None, help="time only these names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of the same code (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.pairs, args.repeat, args.warmup = 4, 200, 1, 1

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    label_dir = find_label_dir(args.labels)
    boxes, classes, used = load_boxes(label_dir, args.batch, args.image_size)
    stride = 8.0
    pred, target, gt = make_pairs(boxes, args.pairs, args.jitter, stride, g)
    n = pred.shape[0]
    pred = pred.to(device).requires_grad_()
    target = target.to(device)
    log_var = (torch.randn(n, 4, generator=g) * 0.5).to(device).requires_grad_()
    image_size = torch.full((n,), args.image_size / stride, device=device)
    logits = (torch.randn(n, NUM_CLASSES, generator=g) * 2 - 4).to(device).requires_grad_()
    one_hot = torch.nn.functional.one_hot(classes[gt], NUM_CLASSES).float().to(device)

    print(f"pairs: {n} = the {len(boxes)} ground-truth boxes of {used} coco128 images ({label_dir}) replicated, "
          f"predictions = gt jittered by {args.jitter} of its size; boxes in stride-{stride:g} grid units; class "
          f"logits [{n}, {NUM_CLASSES}] with one-hot targets")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeat} "
          f"runs after {args.warmup} warm-up\n")
    print("| loss | table | forward ms | forward + backward ms |")
    print("|---|---|---:|---:|")
    rows = []
    for family, table, inputs in (("box", BOX, (pred, target)), ("cls", CLS, (logits, one_hot))):
        for name in table:
            if args.only is not None and name not in args.only:
                continue
            spec = parse_loss_spec(name, table)  # a stateful loss: a fresh instance, in training mode
            extra = {}
            if spec.accepts("pred_log_var"):
                extra["pred_log_var"] = log_var
            if spec.accepts("image_size"):
                extra["image_size"] = image_size
            fwd, both = bench(name, spec, inputs, extra, args.repeat, args.warmup, device)
            print(f"| `{name}` | {family} | {fwd:.2f} | {both:.2f} |", flush=True)
            rows.append(row("loss", f"{family} {name}, {n} pairs", device, forward_ms=fwd, forward_backward_ms=both))
    if args.json:
        write_json(rows, args.json, argv, __file__)
    return rows


if __name__ == "__main__":
    main()
