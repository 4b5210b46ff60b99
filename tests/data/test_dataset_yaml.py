"""Dataset YAMLs: the shipped ones build the right datasets; every error names the YAML file and line."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from detector.data import CocoDataset, VocDataset, YoloDataset, build_dataset, load_dataset_yaml
from detector.errors import DatasetError

DATA = Path(__file__).resolve().parents[2] / "data"


def test_coco128_yaml_builds_the_coco_dataset():
    spec = load_dataset_yaml(str(DATA / "coco128.yaml"))
    assert spec.format == "coco" and spec.root == str(DATA / "coco128")
    assert spec.names is None  # read from the JSON
    ds = build_dataset(spec, "val")
    assert isinstance(ds, CocoDataset) and len(ds) == 128 and len(ds.names) == 80


def test_coco128_yolo_yaml_has_the_same_classes_as_the_json(coco128):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(str(DATA / "coco128_yolo.yaml"), "train", max_images=4)
    assert isinstance(ds, YoloDataset) and len(ds) == 4
    assert ds.names == coco128.names


def test_bccd_yaml_resolves_relative_to_its_folder(bccd_root):
    """data/bccd.yaml says ``path: ../../shared/data/bccd``: relative to data/, i.e. the repository's ../shared."""
    spec = load_dataset_yaml(str(DATA / "bccd.yaml"))
    assert Path(spec.root) == bccd_root
    assert spec.names == ["RBC", "WBC", "Platelets"] and set(spec.splits) == {"train", "val", "test"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(spec, "test")
    assert isinstance(ds, VocDataset) and len(ds) == 72


def _yaml(tmp_path: Path, text: str) -> str:
    (tmp_path / "root").mkdir(exist_ok=True)
    path = tmp_path / "cfg" / "ds.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


def test_paths_resolve_against_the_yaml_folder(tmp_path, write_image):
    """``path: ../root`` from cfg/ds.yaml is tmp/root; ``train: imgs`` is tmp/root/imgs."""
    write_image(tmp_path / "root" / "imgs" / "a.png", 8, 8)
    path = _yaml(tmp_path, "format: yolo\npath: ../root\ntrain: imgs\nval: imgs\nnames: [a]\n")
    spec = load_dataset_yaml(path)
    assert spec.root == str(tmp_path / "root")
    assert build_dataset(spec, "train").records[0].path == str(tmp_path / "root" / "imgs" / "a.png")


@pytest.mark.parametrize("text, line, message", [
    ("format: kitti\npath: ../root\ntrain: a\nval: a\nnames: [x]\n", 1, r"format: 'kitti' is not a dataset format"),
    ("path: ../root\nformat: voc\ntrain: a\nval: a\nnames: [x]\nlabels: 3\n", 6, r"labels: unknown key"),
    ("format: voc\npath: ../missing\ntrain: a\nval: a\nnames: [x]\n", 2, r"path: dataset folder .*missing not found"),
    ("format: voc\npath: ../root\ntrain: a\nval: a\nnames: x\n", 5, r"names must be a non-empty list"),
    ("format: voc\npath: ../root\ntrain: a\nval: a\nnames: [x, x]\n", 5, r"names must be unique"),
    ("format: coco\npath: ../root\ntrain: a\nval: a\n", 3, r"train: a coco split is \{images"),
    ("format: voc\npath: ../root\ntrain: a\nval: a\nnames: [x]\nnc: 2\n", 6, r"nc: nc=2 does not match"),
    ("format: voc\npath: ../root\ntrain: [a\nval: a\n", 4, r"not valid YAML"),
])
def test_errors_name_file_and_line(tmp_path, text, line, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(DatasetError, match=rf"ds.yaml:{line}: {message}"):
        load_dataset_yaml(path)


def test_missing_keys_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"ds.yaml: val: missing split"):
        load_dataset_yaml(_yaml(tmp_path, "format: voc\npath: ../root\ntrain: a\nnames: [x]\n"))
    with pytest.raises(DatasetError, match=r"ds.yaml: names: missing; a voc dataset needs"):
        load_dataset_yaml(_yaml(tmp_path, "format: voc\npath: ../root\ntrain: a\nval: a\n"))
    with pytest.raises(DatasetError, match=r"nope.yaml: dataset YAML not found"):
        load_dataset_yaml(str(tmp_path / "nope.yaml"))


def test_missing_data_file_names_the_yaml_line_and_the_file(tmp_path):
    """The split's list file is missing: the message gives the YAML line of ``val`` and the missing path."""
    path = _yaml(tmp_path, "format: voc\npath: ../root\ntrain: train\nval: val\nnames: [x]\n")
    with pytest.raises(DatasetError, match=r"ds.yaml:4: val: .*root/ImageSets/Main/val.txt: split list not found"):
        build_dataset(path, "val")
    with pytest.raises(DatasetError, match=r"ds.yaml: no split 'test'"):
        build_dataset(path, "test")


def test_coco2017_yaml_points_beside_the_repository_and_names_the_missing_download():
    """data/coco.yaml looks for the user's COCO download beside the repository; without it, the error names the
    YAML's line and the folder it looked for."""
    root = (DATA / "../../datasets/coco").resolve()
    if (root / "annotations" / "instances_val2017.json").exists():
        spec = load_dataset_yaml(str(DATA / "coco.yaml"))
        assert spec.format == "coco" and Path(spec.root) == root
        return
    with pytest.raises(DatasetError, match=rf"coco.yaml:\d+: path: dataset folder {root} not found"):
        load_dataset_yaml(str(DATA / "coco.yaml"))
