"""tools/check_data.py on copies of coco128 with faults injected: every problem listed at once with its file and
line or annotation id, the summary counted independently, exit code 1 on fatal problems, headers cached."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from detector.data.check import HeaderCache, check_dataset
from detector.data.dataset_yaml import load_dataset_yaml

REPO = Path(__file__).resolve().parents[2]
COCO128 = REPO / "data" / "coco128"
STEMS = ["000000000009", "000000000025", "000000000030", "000000000034", "000000000036", "000000000042"]


def _tool():
    spec = importlib.util.spec_from_file_location("check_data", REPO / "tools" / "check_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def yolo_root(tmp_path) -> Path:
    """Six coco128 images with their labels in ultralytics' layout, and a data.yaml without format."""
    with open(COCO128 / "annotations" / "instances_train2017.json") as f:
        names = [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]
    for stem in STEMS:
        for kind, ext in (("images", ".jpg"), ("labels", ".txt")):
            (tmp_path / kind).mkdir(exist_ok=True)
            shutil.copy(COCO128 / kind / "train2017" / (stem + ext), tmp_path / kind / (stem + ext))
    (tmp_path / "data.yaml").write_text(f"train: images\nval: images\nnames: {json.dumps(names)}\n")
    return tmp_path


def test_a_clean_copy_passes_and_the_summary_is_counted_independently(yolo_root, capsys):
    """Boxes: the number of non-empty label lines; per class: the first field of each line counted here."""
    lines = [ln.split() for s in STEMS for ln in (yolo_root / "labels" / f"{s}.txt").read_text().splitlines()]
    assert _tool().main([str(yolo_root / "data.yaml"), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert f"train ({yolo_root / 'images'}): 6 images, {len(lines)} boxes, 0 empty images" in out
    assert "val: same files as train" in out and "0 fatal problems, 0 warnings" in out
    assert "images by longest side: <=320: 0, 321-640: 6, 641-1280: 0, >1280: 0" in out
    assert f"person {sum(p[0] == '0' for p in lines)}" in out


def test_every_injected_fault_is_listed_with_its_location(yolo_root, capsys):
    """Seven faults in one run: truncated JPEG, zero-byte image, class 999 (line 2), nan (line 1), a BOM (silent),
    a coordinate 1.0000001 (clipped, counted), an orphan label file (warning)."""
    img, lbl = yolo_root / "images", yolo_root / "labels"
    data = (img / f"{STEMS[0]}.jpg").read_bytes()
    (img / f"{STEMS[0]}.jpg").write_bytes(data[: len(data) // 3])
    (img / f"{STEMS[1]}.jpg").write_bytes(b"")
    (lbl / f"{STEMS[2]}.txt").write_text("0 0.5 0.5 0.1 0.1\n999 0.5 0.5 0.1 0.1\n")
    (lbl / f"{STEMS[3]}.txt").write_text("nan 0.5 0.5 0.1 0.1\n")
    (lbl / f"{STEMS[4]}.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\n")
    (lbl / f"{STEMS[5]}.txt").write_text("0 0.5 0.5 1.0000001 0.1\n")
    (lbl / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert _tool().main([str(yolo_root / "data.yaml"), "--no-cache", "--splits", "train"]) == 1
    out = capsys.readouterr().out
    assert "4 fatal problems, 1 warnings" in out
    assert f"error: {img / STEMS[0]}.jpg: truncated JPEG" in out
    assert f"error: {img / STEMS[1]}.jpg: cannot read image header: empty file (0 bytes)" in out
    assert f"error: {lbl / STEMS[2]}.txt:2: class '999' is not an integer in 0..79" in out
    assert f"error: {lbl / STEMS[3]}.txt:1: non-finite value 'nan'" in out
    assert f"warning: {lbl}/orphan.txt: label file has no image" in out
    assert "repaired when read: 1 coordinates clipped into [0, 1]" in out
    assert f"train ({img}): 2 images, 2 boxes, 0 empty images" in out  # the BOM and the clipped file


def test_coco_size_mismatch_and_duplicate_ids_are_found_before_training(tmp_path, capsys):
    """A COCO JSON stating 100x100 for a 640x480 image, and an image id used twice: both fatal, both named."""
    with open(COCO128 / "annotations" / "instances_train2017.json") as f:
        data = json.load(f)
    images = [im for im in data["images"] if im["file_name"][:-4] in STEMS[:3]]
    for im in images:
        shutil.copy(COCO128 / "images" / "train2017" / im["file_name"], tmp_path / im["file_name"])
    ids = {im["id"] for im in images}
    data = {"images": images, "categories": data["categories"],
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    data["images"][0].update(width=100, height=100)
    data["images"][2]["id"] = data["images"][1]["id"]
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "d.yaml").write_text("train: {images: ., annotations: a.json}\nval: {images: ., annotations: a.json}\n")
    assert _tool().main([str(tmp_path / "d.yaml"), "--no-cache"]) == 1
    out = capsys.readouterr().out
    assert f"a.json: image ids [{images[1]['id']}] appear more than once" in out
    assert f"{tmp_path / images[0]['file_name']}: image is 640x480 (w x h) but the annotations say 100x100" in out


def test_headers_are_cached_by_size_and_mtime(yolo_root, tmp_path):
    """Second run: every header from the cache file; a rewritten image is read again."""
    spec, cache_file = load_dataset_yaml(str(yolo_root / "data.yaml")), str(tmp_path / "cache" / "h.json")
    first = HeaderCache(cache_file)
    check_dataset(spec, first)
    first.save()
    assert first.hits == 0 and len(first.entries) == 6
    second = HeaderCache(cache_file)
    check_dataset(spec, second)
    assert second.hits == 6
    shutil.copy(COCO128 / "images" / "train2017" / "000000000049.jpg", yolo_root / "images" / f"{STEMS[0]}.jpg")
    third = HeaderCache(cache_file)
    check_dataset(spec, third)
    assert third.hits == 5
    assert third.entries[str(yolo_root / "images" / f"{STEMS[0]}.jpg")][2:4] == [500, 381]  # h, w of image 49
