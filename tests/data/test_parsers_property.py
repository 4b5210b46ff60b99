"""Property tests of the three label parsers: whatever a label file holds, it gives valid boxes or a DatasetError
naming the file (and the line, for text formats), never another exception.

Valid boxes: finite, ``x1 <= x2``, ``y1 <= y2``, inside the image after the parser's repairs, classes in ``0..C-1``.
Inputs are drawn from grammars of almost-right files (numbers near the edges, ``nan``/``inf``, exotic whitespace and
line breaks, wrong types and missing keys) plus arbitrary bytes. ``derandomize=True`` makes every run draw the same
examples, so CI is reproducible; the example counts keep each test to a few seconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.data.coco import load_coco_json
from detector.data.coco_table import coco_table
from detector.data.voc import parse_voc_xml
from detector.data.yolo import normalised_cxcywh_to_xyxy, parse_label_file
from detector.errors import DatasetError

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NUM_CLASSES = 3
LINE_BREAKS = ("\n", "\r\n", "\r")
"""The line breaks an editor shows as new lines; a reported line number counts these."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parsers")


def editor_lines(text: str) -> list[str]:
    """``text`` split at ``\\n``, ``\\r\\n`` and ``\\r`` only (what a line number in a message refers to)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def assert_names_file_and_line(err: DatasetError, path: str, lines: list[str] | None, blank_ok: bool = False) -> None:
    """Every problem in ``err`` is located in ``path``; with ``lines``, at an existing line (non-blank unless
    ``blank_ok``: an XML error may sit at the empty end of a document)."""
    problems = getattr(err, "problems", None) or [err]
    assert str(err).startswith(path) or str(err).split("\n", 1)[1].startswith(path), str(err)
    for p in problems:
        assert p.file == path, str(err)
        if lines is not None and p.line is not None:
            assert 1 <= p.line <= len(lines) and (blank_ok or lines[p.line - 1].strip()), (p.line, str(err))


def assert_valid_boxes(boxes: np.ndarray, labels: np.ndarray, width: float, height: float) -> None:
    """boxes (ndarray[k, 4]) xyxy pixels and labels (ndarray[k]) of an image ``width x height``."""
    assert boxes.shape == (len(labels), 4) and np.isfinite(boxes).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
    assert ((labels >= 0) & (labels < NUM_CLASSES)).all()


# --- YOLO txt -----------------------------------------------------------------------------------------------------
EDGE_TOKENS = ["0", "1", "2", "3", "-1", "0.5", "1.0", "1.0000001", "1.002", "-0.0005", "-0.01", "1e-3", "1e400",
               "nan", "NaN", "inf", "-inf", "Infinity", "1_0", "0x1p-1", "\u0663", "", "abc", "1,5", "0.5.5", "+0.3",
               "1e-320", "999", "2.0", "2.5"]
token = st.one_of(st.sampled_from(EDGE_TOKENS), st.floats(-0.1, 1.1).map(repr), st.integers(-5, 10).map(str),
                  st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=4))
separator = st.sampled_from([" ", "  ", "\t", " \t", "\x0b", "\x0c", "\x1c", "\u00a0", "\u2028"])
yolo_line = st.builds(lambda toks, sep: sep.join(toks), st.lists(token, max_size=9), separator)
yolo_text = st.builds(lambda lines, brk, bom: ("\ufeff" if bom else "") + brk.join(lines),
                      st.lists(yolo_line, max_size=6), st.sampled_from(LINE_BREAKS), st.booleans())


def _check_yolo(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        labels, boxes = parse_label_file(str(path), NUM_CLASSES)
    except DatasetError as err:
        text = data.decode("utf-8-sig", errors="replace")
        assert_names_file_and_line(err, str(path), editor_lines(text))
        return
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    assert np.isfinite(boxes).all() and ((boxes >= 0) & (boxes <= 1)).all()  # normalised cxcywh, repaired
    for width, height in ((640, 480), (1, 1), (4000, 3)):
        assert_valid_boxes(normalised_cxcywh_to_xyxy(boxes, width, height), labels, width, height)


@SETTINGS
@given(text=yolo_text)
def test_yolo_lines_parse_to_valid_boxes_or_name_the_line(workdir, text):
    _check_yolo(workdir / "a.txt", text.encode("utf-8"))


@settings(SETTINGS, max_examples=150)
@given(data=st.binary(max_size=120))
def test_yolo_arbitrary_bytes(workdir, data):
    _check_yolo(workdir / "b.txt", data)


# --- COCO JSON ----------------------------------------------------------------------------------------------------
scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 700), st.integers(), st.floats(), st.text(max_size=5))
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3),
                                                                                            inner, max_size=3),
                        max_leaves=8)
number = st.one_of(st.integers(-50, 700), st.floats(-50, 700), st.sampled_from([math.nan, math.inf, -math.inf,
                                                                                 1e308, -1e308, 2**70]))


def maybe(strategy):
    """Usually ``strategy``, sometimes any JSON value, so that both deep code and type checks are reached."""
    return st.one_of(strategy, strategy, strategy, anything)


def entry(fields: dict) -> st.SearchStrategy:
    """A dict with a random subset of ``fields`` (each a strategy), most often all of them."""
    return st.builds(lambda d, drop: {k: v for k, v in d.items() if k not in drop},
                     st.fixed_dictionaries(fields), st.sets(st.sampled_from(sorted(fields)), max_size=1))


coco_image = entry({"id": maybe(st.integers(0, 4)), "file_name": maybe(st.just("a.jpg")),
                    "width": maybe(st.integers(-2, 700)), "height": maybe(st.integers(-2, 700))})
coco_ann = entry({"id": maybe(st.integers(-1, 5)), "image_id": maybe(st.integers(0, 5)),
                  "category_id": maybe(st.integers(0, 4)), "bbox": maybe(st.lists(number, min_size=3, max_size=5)),
                  "area": maybe(number), "iscrowd": maybe(st.integers(0, 1))})
coco_cat = entry({"id": maybe(st.integers(0, 4)), "name": maybe(st.sampled_from(["a", "b", "c", "set"])),
                  "supercategory": maybe(st.sampled_from(["none", "set", "a"]))})
coco_data = st.fixed_dictionaries({"images": st.lists(maybe(coco_image), max_size=4),
                                   "annotations": st.lists(maybe(coco_ann), max_size=8),
                                   "categories": st.lists(maybe(coco_cat), max_size=4)})


@SETTINGS
@given(data=coco_data)
def test_coco_annotations_give_valid_boxes_or_problems_naming_the_file(data):
    """``coco_table`` collects problems rather than raising; every one names the file, and the boxes it keeps (training
    boxes and crowd regions) are valid in their image's size; class indices point into the classes it lists."""
    try:
        table = coco_table(data, "a.json")
    except DatasetError as err:
        assert_names_file_and_line(err, "a.json", None)
        return
    assert all(p.file == "a.json" for p in table.problems)
    n = len(table.labels)
    assert table.xyxy.shape == (n, 4) and table.image_index.shape == table.crowd.shape == (n,)
    assert ((table.labels >= 0) & (table.labels < len(table.cat_ids))).all() and len(table.names) == len(table.cat_ids)
    assert ((table.image_index >= 0) & (table.image_index < len(table.images))).all()
    assert np.isfinite(table.area).all() and np.isfinite(table.xyxy).all()
    for k in range(n):
        im = table.images[table.image_index[k]]
        box = table.xyxy[k:k + 1]
        assert_valid_boxes(box, np.zeros(1, np.int64), im["width"], im["height"])
        assert box[0, 2] > box[0, 0] and box[0, 3] > box[0, 1]  # zero-area boxes are dropped


@settings(SETTINGS, max_examples=150)
@given(raw=st.one_of(st.binary(max_size=80), coco_data.map(lambda d: json.dumps(d).encode()),
                     anything.map(lambda d: json.dumps(d).encode())))
def test_coco_json_files_load_or_name_the_file(workdir, raw):
    """Any bytes: a dict with the three lists, or a DatasetError naming the file (and line, for bad JSON)."""
    path = workdir / "c.json"
    path.write_bytes(raw)
    try:
        data = load_coco_json(str(path))
    except DatasetError as err:
        assert_names_file_and_line(err, str(path), None)
        return
    assert all(isinstance(data[k], list) for k in ("images", "annotations", "categories"))


# --- VOC XML ------------------------------------------------------------------------------------------------------
xml_value = st.one_of(st.integers(-5, 700).map(str), st.floats(-5, 700).map(repr),
                      st.sampled_from(["nan", "inf", "-inf", "1e400", "", "abc", " 12 ", "1e39", "0", "-0"]))
voc_object = st.builds(
    lambda name, corners, drop: "<object><name>{}</name><bndbox>{}</bndbox></object>".format(
        name, "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), corners) if t not in drop)),
    st.sampled_from(["a", "b", "c", " a ", "d", ""]), st.lists(xml_value, min_size=4, max_size=4),
    st.sets(st.sampled_from(["xmin", "ymax"]), max_size=1))
voc_xml = st.builds(
    lambda w, h, objects, size: "<annotation>{}{}</annotation>".format(
        f"<size><width>{w}</width><height>{h}</height></size>" if size else "", "".join(objects)),
    xml_value, xml_value, st.lists(voc_object, max_size=4), st.booleans())


def _check_voc(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        boxes, labels, height, width, dropped = parse_voc_xml(str(path), {"a": 0, "b": 1, "c": 2})
    except DatasetError as err:
        lines = editor_lines(data.decode("utf-8", errors="replace"))
        assert_names_file_and_line(err, str(path), lines, blank_ok=True)
        return
    assert height > 0 and width > 0 and dropped >= 0
    assert_valid_boxes(boxes, labels, width, height)
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()  # zero-area boxes are dropped


@SETTINGS
@given(text=voc_xml)
def test_voc_xml_gives_valid_boxes_or_names_the_file(workdir, text):
    _check_voc(workdir / "a.xml", text.encode("utf-8"))


@settings(SETTINGS, max_examples=100)
@given(data=st.binary(max_size=80))
def test_voc_arbitrary_bytes(workdir, data):
    _check_voc(workdir / "b.xml", data)
