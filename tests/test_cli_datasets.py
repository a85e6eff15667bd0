"""`python -m core embed` and `python -m core evaluate`, run in-process on the tiny test CNN."""

import csv
import json

from core.__main__ import main
from tests import zips
from tests.conftest import TINY


def test_embed_writes_points(tmp_path, capsys):
    out = tmp_path / "points.csv"
    assert main(["embed", "shapes", "--model", TINY, "--limit", "24", "--method", "pca", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 24 and set(rows[0]) == {"x", "y", "label", "prediction", "file"}
    assert rows[0]["label"] in {"circle", "square", "triangle", "star"} and rows[0]["file"].endswith(".png")
    assert "24 points (pca" in capsys.readouterr().out


def test_evaluate_json(tmp_path, capsys):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zips.build(zips.classes(("red", "blue"), per_class=6)))
    assert main(["evaluate", str(archive), "--model", TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "linear probe" and report["classes"] == ["blue", "red"]
    assert len(report["confusion"]) == 2 and sum(map(sum, report["confusion"])) == report["evaluated"]
    assert {m["class"] for m in report["per_class"]} == {"blue", "red"}


def test_hostile_zip_exits_2_with_one_line(tmp_path, capsys):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zips.zip_slip())
    assert main(["evaluate", str(archive), "--model", TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unsafe path" in err


def test_evaluate_a_downloaded_set_with_a_readme_beside_the_class_folders(tmp_path, capsys):
    # pets/README.txt + pets/LICENSE + pets/labels.csv + pets/red/... + pets/blue/...: was "only the class 'pets'"
    archive = tmp_path / "pets.zip"
    archive.write_bytes(zips.finder(zips.tree(extras={**zips.README, **zips.LABELS}, names=("red", "blue"),
                                              per_class=6), "pets"))
    assert main(["evaluate", str(archive), "--model", TINY, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["classes"] == ["blue", "red"] and report["skipped"] == {}
    assert sorted(report["ignored"]) == ["pets/LICENSE", "pets/README.txt", "pets/labels.csv"]
    assert "note: Other files ignored (not in a class folder): pets/README.txt, pets/LICENSE, pets/labels.csv." in captured.err
