"""tools/show_assign.py: its drawing on a hand-built assignment, the CLI on the shipped coco128, and its errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector.data import CocoDataset, letterboxed_sample
from detector.models.priors import AnchorPriorGenerator
from detector.structures import Assignment
from tool_loader import load_tool as _tool  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COCO128 = REPO / "data" / "coco128"
IMAGE = 1  # coco128 image 25: two giraffes, one large, one small, far apart
SIZE = 256


show_assign = _tool("show_assign")


def _count(image: np.ndarray, colour) -> int:
    return int((image == np.asarray(colour, np.uint8)).all(-1).sum())


def test_draw_assignment_on_a_hand_built_case():
    """One level, stride 16, 4 x 4 cells, anchors (16, 16) and (40, 24) on a grey 64 x 64 image.
    Box 0 = (4, 4, 28, 28) with the pair prior 5 = anchor 0, cell (1, 1): dot at its centre (24, 24) in colour 0,
    anchor box 16 x 16 around it, from (16, 16) to (32, 32), thin in colour 0.
    Box 1 = (40, 40, 60, 60) with no pair: its outline only, in colour 1.
    Ignored prior 16 + 15 = 31 = anchor 1, cell (3, 3): a grey cross at (56, 56). One legend line."""
    priors = AnchorPriorGenerator([[(16, 16), (40, 24)]], [16])([(4, 4)])
    long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    ignore = torch.zeros(1, len(priors), dtype=torch.bool)
    ignore[0, 31] = True
    assignment = Assignment(long([0]), long([5]), long([0]), ignore=ignore)
    image = np.full((64, 64, 3), 114, np.uint8)
    boxes = np.array([[4, 4, 28, 28], [40, 40, 60, 60]], np.float32)
    out = show_assign.draw_assignment(image, boxes, assignment, priors)

    c0, c1 = show_assign.box_colour(0), show_assign.box_colour(1)
    assert c0 != c1 and (image == 114).all()  # drawn on a copy
    assert tuple(out[24, 24]) == c0  # the dot
    assert tuple(out[16, 31]) == c0 and tuple(out[32, 31]) == c0  # the anchor box's top and bottom edges
    assert tuple(out[28, 10]) == c0 and tuple(out[50, 40]) == c1  # the ground-truth outlines
    assert tuple(out[50, 50]) == (114, 114, 114)  # inside box 1: nothing drawn
    assert tuple(out[56, 56]) == show_assign.IGNORE_COLOUR and tuple(out[56, 53]) == show_assign.IGNORE_COLOUR
    # the legend: one line (one level) of white text on black, top left
    assert tuple(out[0, 0]) == (0, 0, 0) and out[:14].max() == 255 and tuple(out[16, 1]) == (114, 114, 114)


@pytest.mark.parametrize("cfg", ["yolov5_ciou", "fcos"])
def test_writes_the_letterboxed_image_with_box_colours(cfg, tmp_path, capsys):
    """Image 1 at 256 px: the PNG is 256 x 256; each ground-truth box has at least half its outline in its own
    colour (later drawing may cover some); the statistics table and the path are printed."""
    out = tmp_path / "sub" / "assign.png"
    assert show_assign.main(["--cfg", cfg, "--set", f"data.img_size={SIZE}", "data.workers=0",
                             "--image", str(IMAGE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "pos_per_gt" in printed and "pos_level_2" in printed

    drawn = cv2.imread(str(out))
    assert drawn.shape == (SIZE, SIZE, 3)
    dataset = CocoDataset(str(COCO128 / "annotations" / "instances_train2017.json"),
                          str(COCO128 / "images" / "train2017"))
    sample, _ = letterboxed_sample(dataset, IMAGE, SIZE)
    plain = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
    assert len(sample.boxes) == 2
    for i, (x1, y1, x2, y2) in enumerate(np.round(sample.boxes).astype(int)):
        colour = np.asarray(show_assign.box_colour(i), np.uint8)
        edge = np.concatenate([drawn[y1, x1:x2], drawn[y2, x1:x2], drawn[y1:y2, x1], drawn[y1:y2, x2]])  # (k, 3)
        assert (edge == colour).all(-1).mean() > 0.5, i
        assert _count(drawn, colour) > _count(plain, colour) + (x2 - x1) + (y2 - y1)


def test_bad_image_index_exits_2_naming_it(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert show_assign.main(["--cfg", "yolov5_ciou", "--image", "500", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--image 500" in err and "0..127" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_config_exits_2_naming_it(capsys):
    assert show_assign.main(["--cfg", "no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert "no_such_preset" in err and len(err.strip().splitlines()) == 1


def test_nms_free_config_draws_either_head(tmp_path, capsys):
    """yolo_e2e: the one-to-many head's TAL (top-k 10) gives at most 10 points per box, the one-to-one head's (top-1)
    exactly one for each box that has a candidate point; --one-to-one without a one_to_one section is refused."""
    common = ["--cfg", "yolo_e2e", "--set", f"data.img_size={SIZE}", "data.workers=0", "--image", str(IMAGE)]

    def pos_per_gt(extra):
        assert show_assign.main(common + ["--out", str(tmp_path / "a.png")] + extra) == 0
        line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("pos_per_gt"))
        return float(line.split()[1])

    many, one = pos_per_gt([]), pos_per_gt(["--one-to-one"])
    assert 1.0 < many <= 10.0 and one == 1.0
    assert show_assign.main(["--cfg", "yolov5_ciou", "--one-to-one", "--out", str(tmp_path / "b.png")]) == 2
    assert "one_to_one" in capsys.readouterr().err
