"""A batch of :class:`~detector.data.plan.SamplePlan` drawn on the training device (``data.augment_backend: torch``).

The dataset's images are decoded once and kept on the device (:class:`ImageBank`, uint8, padded to the largest).
For each of the four tile slots, one ``grid_sample`` reads every sample's tile at once: output pixel -> canvas
(the inverse affine) -> resized tile (the tile's offset) -> source image (the resize), bilinear, clamped to the
source's edge, kept where the canvas point lies in the tile's rectangle; elsewhere gray 114. Then the HSV gains
(OpenCV's HSV, on floats: no uint8 rounding between steps) and the flips, per sample, in the batch.

:class:`RenderLoader` wraps a DataLoader of plans and yields :class:`~detector.data.collate.Batch` with the images
already on the device, so the training loop does not change.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detector.data.collate import Batch
from detector.data.letterbox import PAD_VALUE, ImageMeta
from detector.data.plan import TILES, SamplePlan


class ImageBank:
    """Every image of ``dataset`` decoded once, as one ``Tensor[N, 3, H_max, W_max]`` uint8 on ``device``."""

    def __init__(self, dataset, device: torch.device | str = "cpu") -> None:
        images = [dataset.image(i) for i in range(len(dataset))]  # (H, W, 3) uint8 each (cached ones if any)
        h_max, w_max = max(im.shape[0] for im in images), max(im.shape[1] for im in images)
        bank = torch.zeros(len(images), 3, h_max, w_max, dtype=torch.uint8)
        for i, im in enumerate(images):
            # written through numpy: a cached image is a read-only array, which torch.from_numpy warns about
            bank[i, :, :im.shape[0], :im.shape[1]].numpy()[...] = im.transpose(2, 0, 1)
        self.images = bank.to(device)

    @property
    def nbytes(self) -> int:
        return self.images.numel()


_BANKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # dataset -> {device: ImageBank}


def image_bank(dataset, device: torch.device | str) -> ImageBank:
    """The :class:`ImageBank` of ``dataset`` on ``device``, built on first use and kept while the dataset lives
    (outside the dataset object, so DataLoader workers never receive device tensors)."""
    banks = _BANKS.setdefault(dataset, {})
    key = str(torch.device(device))
    if key not in banks:
        banks[key] = ImageBank(dataset, device)
    return banks[key]


def collate_plans(items: list[tuple[SamplePlan, ImageMeta]]) -> tuple[dict[str, Tensor], Tensor, list[ImageMeta]]:
    """Stack B plans into tensors (``tiles [B, 4]``, ``to_canvas [B, 2, 3]``, ``rects [B, 4, 4]``, ``shift``,
    ``ratio``, ``src_size [B, 4, 2]``, ``hsv [B, 3]``, ``flips [B, 2]``) and their targets ``[n, 6]``."""
    plans = [p for p, _ in items]
    geometry = {k: torch.from_numpy(np.stack([getattr(p, k) for p in plans]))
                for k in ("tiles", "to_canvas", "rects", "shift", "ratio", "src_size", "hsv", "flips")}
    rows = [np.concatenate([np.full((len(p.labels), 1), i, np.float32), p.labels[:, None].astype(np.float32),
                            p.boxes.reshape(-1, 4)], 1) for i, p in enumerate(plans)]
    targets = torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)
    return geometry, targets, [m for _, m in items]


def render(bank: ImageBank, geometry: dict[str, Tensor], size: int) -> Tensor:
    """The plans' pixels: Tensor[B, 3, S, S] float32 RGB in [0, 1] on the bank's device."""
    device = bank.images.device
    g = {k: v.to(device) for k, v in geometry.items()}
    batch = g["tiles"].shape[0]
    ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float64),
                            torch.arange(size, device=device, dtype=torch.float64), indexing="ij")  # (S, S)
    m = g["to_canvas"]  # (B, 2, 3)
    cx = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]  # (B, S, S)
    cy = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    out = torch.full((batch, 3, size, size), float(PAD_VALUE), device=device)
    h_bank, w_bank = bank.images.shape[2:]
    for k in range(TILES):
        index, rect = g["tiles"][:, k], g["rects"][:, k, :, None, None]  # (B,), (B, 4, 1, 1)
        inside = ((cx >= rect[:, 0] - 0.5) & (cx < rect[:, 2] - 0.5) & (cy >= rect[:, 1] - 0.5)
                  & (cy < rect[:, 3] - 0.5) & (index >= 0)[:, None, None])  # (B, S, S)
        if not bool(inside.any()):
            continue
        shift, ratio = g["shift"][:, k, :, None, None], g["ratio"][:, k, :, None, None]  # (B, 2, 1, 1)
        w, h = g["src_size"][:, k, 0, None, None], g["src_size"][:, k, 1, None, None]  # (B, 1, 1)
        sx = ((cx - shift[:, 0] + 0.5) * ratio[:, 0] - 0.5).clamp(min=0).minimum(w - 1)  # source pixel centres
        sy = ((cy - shift[:, 1] + 0.5) * ratio[:, 1] - 0.5).clamp(min=0).minimum(h - 1)
        grid = torch.stack(((2 * sx + 1) / w_bank - 1, (2 * sy + 1) / h_bank - 1), -1).float()  # (B, S, S, 2)
        source = bank.images[index.clamp(min=0)].float()  # (B, 3, H_max, W_max)
        tile = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = torch.where(inside[:, None], tile, out)
    out = hsv_gains(out, g["hsv"])
    flips = g["flips"].bool()
    out = torch.where(flips[:, 0, None, None, None], out.flip(2), out)
    out = torch.where(flips[:, 1, None, None, None], out.flip(3), out)
    return out.div_(255)


def hsv_gains(rgb: Tensor, gains: Tensor) -> Tensor:
    """rgb (Tensor[B, 3, H, W] float, 0..255), gains (Tensor[B, 3]) -> the same with OpenCV's H (0..180), S and V
    (0..255) scaled by the gains: H wrapping at 180, S and V clipped at 255 (YOLOv5's ``augment_hsv``)."""
    r, g, b = rgb.unbind(1)  # (B, H, W) each
    v, _ = rgb.max(1)
    delta = v - rgb.min(1)[0]
    s = torch.where(v > 0, delta / v.clamp(min=1e-6) * 255, torch.zeros_like(v))
    safe = delta.clamp(min=1e-6)
    hue = torch.where(v == r, 60 * (g - b) / safe, torch.where(v == g, 120 + 60 * (b - r) / safe,
                                                                 240 + 60 * (r - g) / safe))
    hue = torch.where(delta > 0, hue % 360, torch.zeros_like(hue)) / 2  # OpenCV's 0..180
    gh, gs, gv = (gains[:, i, None, None].to(rgb.dtype) for i in range(3))
    hue, s, v = (hue * gh) % 180, (s * gs).clamp(0, 255), (v * gv).clamp(0, 255)
    # HSV -> RGB: channel n = V - V S max(0, min(k, 4 - k, 1)), k = (n + H / 60) mod 6, n = 5, 3, 1 for R, G, B
    h6 = hue * 2 / 60
    out = [v - v * (s / 255) * ((n + h6) % 6).minimum(4 - (n + h6) % 6).clamp(0, 1) for n in (5, 3, 1)]
    return torch.stack(out, 1)


class RenderLoader:
    """A DataLoader of ``(SamplePlan, ImageMeta)`` items (collated by :func:`collate_plans`) that yields
    :class:`Batch` with the images drawn on ``bank``'s device. ``len``, ``sampler`` and ``dataset`` are the wrapped
    loader's."""

    def __init__(self, loader, bank: ImageBank, size: int) -> None:
        self.loader, self.bank, self.size = loader, bank, size
        self.sampler, self.dataset = loader.sampler, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for geometry, targets, metas in self.loader:
            yield Batch(images=render(self.bank, geometry, self.size), targets=targets, metas=metas)
