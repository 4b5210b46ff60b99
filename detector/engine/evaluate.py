"""Inference and COCO evaluation of a model during or after training.

``predict`` turns a batch of images into detections the way the head was trained (sigmoid or softmax scores,
objectness, centerness; NMS, variance voting, or CenterNet's peaks). ``evaluate`` runs it over a loader and scores
with pycocotools (or faster-coco-eval). Under data parallelism each rank predicts its slice of the evaluation set
and rank 0 scores them all, in the order one process would have produced them, so the statistics equal the
one-process run's; every rank returns them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from detector.data import scale_boxes_to_original
from detector.engine import distributed
from detector.evaluation.coco import detections_to_coco, evaluate_coco
from detector.ops.nms import postprocess_scores
from detector.ops.peaks import peak_detections
from detector.ops.rows import to_dtype
from detector.structures import detection_scores


def float32_outputs(outputs):
    """Loss terms and post-processing are computed in float32 even when the forward pass ran under autocast."""
    for name in ("box", "cls", "obj", "box_log_var", "quality"):
        if name == "cls" and getattr(outputs, "lazy_cls", None) is not None:
            continue  # a placeholder: the rows read through class_rows take box's dtype
        t = getattr(outputs, name, None)
        if t is not None and t.dtype != torch.float32:
            setattr(outputs, name, to_dtype(t, torch.float32))  # a sparse row gradient goes back sparse
    if getattr(outputs, "one_to_one", None) is not None:
        float32_outputs(outputs.one_to_one)
    return outputs


@torch.no_grad()
def predict(model: nn.Module, coder, images: Tensor, eval_cfg) -> list[Tensor]:
    """images (Tensor[B,3,H,W]) -> B tensors [k, 6] = (x1, y1, x2, y2, score, class) in input pixels."""
    outputs = float32_outputs(model(images))
    boxes = coder.decode(outputs.box, outputs.priors)  # (B, P, 4)
    if eval_cfg.nms == "peaks":  # CenterNet: local maxima of the class maps, no NMS
        return peak_detections(boxes, detection_scores(outputs), outputs.priors.level_shapes[0],
                               conf_thres=eval_cfg.conf_thres, max_det=eval_cfg.max_det)
    log_var = outputs.box_log_var
    if log_var is not None:  # grid-cell units -> pixels, so variance voting compares boxes across levels
        log_var = log_var + 2 * torch.log(outputs.priors.strides)[:, None]  # (B, P, 4)
    return postprocess_scores(
        boxes,
        detection_scores(outputs),  # (B, P, C) as the head was trained: sigmoid or softmax, x obj, centerness
        conf_thres=eval_cfg.conf_thres,
        iou_thres=eval_cfg.iou_thres,
        max_det=eval_cfg.max_det,
        method=eval_cfg.nms,
        box_log_var=log_var,
        variance_voting=eval_cfg.variance_voting,
        nwd_constant=eval_cfg.nwd_constant,
    )


@torch.no_grad()
def evaluate(model: nn.Module, coder, loader, dataset, eval_cfg, device: torch.device, progress: bool = True,
             detections_path: Path | None = None) -> dict[str, float]:
    """COCO mAP (pycocotools) of ``model`` on ``loader``'s images; boxes mapped back to original pixels.

    ``detections_path``: also write ``{"image_ids": [...], "detections": [COCO result dicts]}`` there (JSON),
    so the score can be recomputed, or bootstrapped over images, without the model (rank 0 writes it).
    Under data parallelism ``loader`` gives this rank its slice of the set (its sampler's ``rank`` /
    ``world_size``); the slices are gathered on rank 0, put back in dataset order (padding repeats dropped)
    and scored once; the statistics are broadcast to every rank."""
    model.eval()
    per_image: list[tuple[int, list[dict]]] = []  # (dataset index, its COCO detections) in loader order
    positions = iter([index for index, _ in loader.sampler])  # the dataset index of each image, in order
    for batch in _progress(loader, total=len(loader), desc="eval", enabled=progress):
        dets = predict(model, coder, batch.images.to(device), eval_cfg)
        for d, meta in zip(dets, batch.metas):
            d = d.cpu()
            d[:, :4] = scale_boxes_to_original(d[:, :4], meta)
            per_image.append((next(positions), meta.image_id, detections_to_coco([d], [meta.image_id],
                                                                                  dataset.cat_ids)))
    gathered = distributed.all_gather_objects(per_image)
    stats = None
    if distributed.is_main():
        merged = {index: (image_id, results) for part in gathered for index, image_id, results in part}
        image_ids = [merged[i][0] for i in sorted(merged)]
        results = [r for i in sorted(merged) for r in merged[i][1]]
        if detections_path is not None:
            Path(detections_path).write_text(json.dumps({"image_ids": image_ids, "detections": results}))
        stats = evaluate_coco(dataset.coco_gt(), results, image_ids=image_ids, backend=eval_cfg.backend)
    return distributed.broadcast_object(stats)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
