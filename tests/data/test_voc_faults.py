"""Pascal VOC faults injected into a copy of three BCCD images: malformed XML, an unknown class and a NaN
coordinate are listed together, each naming its file (and line for the XML syntax error)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from detector.data import VocDataset
from detector.errors import DatasetError

NAMES = ["RBC", "WBC", "Platelets"]
STEMS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]


@pytest.fixture
def voc_copy(tmp_path, bccd_root) -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    for stem in STEMS:
        shutil.copy(bccd_root / "Annotations" / f"{stem}.xml", tmp_path / "Annotations" / f"{stem}.xml")
        shutil.copy(bccd_root / "JPEGImages" / f"{stem}.jpg", tmp_path / "JPEGImages" / f"{stem}.jpg")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("\n".join(STEMS) + "\n")
    return tmp_path


def test_three_bad_files_in_one_error(voc_copy):
    xml = [voc_copy / "Annotations" / f"{s}.xml" for s in STEMS]
    xml[0].write_text(xml[0].read_text().replace("</annotation>", ""))
    xml[1].write_text(xml[1].read_text().replace("<name>WBC</name>", "<name>Neutrophil</name>", 1))
    text = xml[2].read_text()
    start = text.index("<xmin>") + len("<xmin>")
    xml[2].write_text(text[:start] + "nan" + text[text.index("</xmin>"):])
    with pytest.raises(DatasetError) as info:
        VocDataset(str(voc_copy), "train", NAMES)
    message = str(info.value)
    assert message.startswith("3 problems in the dataset")
    assert f"{xml[0]}:" in message and "not valid XML" in message
    assert f"{xml[1]}: object" in message and "class name 'Neutrophil' is not one of" in message
    assert f"{xml[2]}: object 0" in message and "non-finite value" in message
    lenient = VocDataset(str(voc_copy), "train", NAMES, strict=False)
    assert len(lenient) == 0 and len(lenient.problems) == 3
