"""Detections on image files with a trained checkpoint: the library side of ``tools/detect.py``.

An image goes through exactly what evaluation does to it (decoded with its EXIF orientation, letterboxed to the
config's ``data.img_size`` with scale-up, scaled to [0, 1]; :func:`detector.engine.evaluate.predict` with the
config's ``eval`` post-processing) and its boxes come back in the pixels of the file as displayed. So at the
evaluation thresholds, the detections of an image equal those a training run scored it with.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from detector.config import Config, config_from_dict
from detector.data.base import Sample
from detector.data.collate import collate
from detector.data.files import read_image_rgb
from detector.data.letterbox import scale_boxes_to_original
from detector.data.pipeline import letterbox_sample
from detector.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Predictor:
    """A trained model ready to detect: its config (``data.img_size`` and ``eval`` thresholds in use), the class
    names and the box coder, on ``device``; ``ema``: the weights are the checkpoint's EMA weights."""

    model: nn.Module
    coder: object
    cfg: Config
    names: list[str]
    device: torch.device
    ema: bool = True

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB images (ndarray[H, W, 3] uint8, any sizes) -> per image ndarray[k, 6] float32 =
        ``(x1, y1, x2, y2, score, class)`` in that image's pixels, by decreasing score."""
        from detector.engine.evaluate import predict

        if not images:
            return []
        no_boxes, no_labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        batch = collate([letterbox_sample(Sample(image, no_boxes, no_labels, image_id=0, path=""), self.cfg.data.img_size)
                         for image in images])
        dets = predict(self.model, self.coder, batch.images.to(self.device), self.cfg.eval)
        out = []
        for d, meta in zip(dets, batch.metas):
            d = d.float().cpu()
            d[:, :4] = scale_boxes_to_original(d[:, :4], meta)
            out.append(d.numpy())
        return out


def load_predictor(weights: str | Path, device: torch.device | str = "cpu", ema: bool = True,
                   overrides: Sequence[str] = ()) -> Predictor:
    """The model of a ``last.pt`` / ``best.pt`` (its EMA weights unless ``ema`` is False or it has none) in eval mode
    on ``device``, with its config and ``key=value`` ``overrides`` (``data.img_size=640``, ``eval.conf_thres=0.25``)
    checked as ``--set`` items are. Raises CheckpointError for a file that is not a checkpoint and ConfigError for an
    override the config schema refuses (an ``img_size`` that is not a multiple of 32)."""
    from detector import build
    from detector.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(weights)
    cfg = config_from_dict(ckpt["config"], source=str(weights), overrides=overrides)
    names = [str(n) for n in ckpt["names"]]
    model = build.build_model(cfg, num_classes=len(names))
    use_ema = ema and ckpt.get("ema") is not None
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    device = torch.device(device)
    return Predictor(model.to(device).eval(), build.build_coder(cfg), cfg, names, device, use_ema)


def image_files(source: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (sorted by name, not recursive) -> their paths.

    Raises DatasetError naming ``source`` when it does not exist or holds no image file."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return files
        raise DatasetError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    raise DatasetError(f"{path}: no such file or folder")


def read_images(paths: Sequence[Path]) -> list[np.ndarray]:
    """RGB pixels of each file as displayed; DatasetError naming the file for one that cannot be decoded."""
    return [read_image_rgb(str(p)) for p in paths]


def class_colour(k: int, saturation: float = 0.85) -> tuple[int, int, int]:
    """BGR colour number ``k`` (a class, a box): saturated hues a golden-ratio step apart."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, saturation, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, dets: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """RGB image and its detections (ndarray[k, 6], original pixels) -> a BGR copy with each box in its class's
    colour and ``name score`` above it (for ``cv2.imwrite``)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for x1, y1, x2, y2, score, cls in dets.tolist():
        colour = class_colour(int(cls))
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(canvas, p1, p2, colour, thickness)
        label = f"{names[int(cls)]} {score:.2f}"
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(p1[1] - h - base, 0)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + w, top + h + base), colour, -1)
        cv2.putText(canvas, label, (p1[0], top + h), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def yolo_lines(dets: np.ndarray, image_shape: tuple[int, ...]) -> list[str]:
    """Detections -> YOLO label lines ``class cx cy w h score`` normalised by the image's width and height (the
    ``--save-txt`` format of YOLOv5 / ultralytics with ``--save-conf``)."""
    h, w = image_shape[:2]
    lines = []
    for x1, y1, x2, y2, score, cls in dets.tolist():
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {score:.5f}")
    return lines


def as_records(path: Path, dets: np.ndarray, names: Sequence[str]) -> dict:
    """One image's detections as plain JSON: ``{"file", "detections": [{"box": xyxy, "score", "class", "name"}]}``."""
    return {"file": str(path), "detections": [
        {"box": [round(v, 2) for v in row[:4]], "score": round(row[4], 5), "class": int(row[5]),
         "name": names[int(row[5])]} for row in dets.tolist()]}

