"""Streamlit AppTest: the Datasets and Transfer learning pages offer only the datasets under the data roots,
through a list, and there is no widget that accepts a free-typed server path."""

from pathlib import Path

import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import roots
from dashboard import dataset_cache
from tests.conftest import TINY

config.set_option("client.showErrorDetails", "full")

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"ds": ROOT / "dashboard" / "app_pages" / "datasets.py", "tr": ROOT / "dashboard" / "app_pages" / "training.py"}

pytestmark = pytest.mark.timeout(300)


def _dataset(folder: Path, classes=("cats", "dogs"), per_class: int = 12) -> None:
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (48, 48), (40 * c, 10 * i, 200 - 40 * c)).save(folder / name / f"{i}.png")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "classroom"
    _dataset(root / "pets")
    _dataset(root / "export" / "shapes", classes=("round", "square", "spiky"), per_class=8)
    _dataset(tmp_path / "private" / "secret")  # outside the root: never offered
    monkeypatch.setenv(roots.ENV, str(root))
    dataset_cache._listed.clear()
    yield root
    dataset_cache._listed.clear()


def _open(prefix: str) -> AppTest:
    at = AppTest.from_file(str(PAGES[prefix]), default_timeout=240)
    at.session_state["model_name"] = TINY
    at.session_state[f"{prefix}_source"] = "folder"
    at.session_state[f"{prefix}_limit"] = 40 if prefix == "ds" else 30
    at.run()
    return at


@pytest.mark.parametrize("prefix", ["ds", "tr"])
def test_the_picker_lists_only_the_datasets_under_the_root_and_takes_no_typed_path(data_root, prefix):
    at = _open(prefix)
    assert not at.exception, at.exception
    typed = [t for t in at.text_input if t.key != "model_find_text"]  # the model finder searches names, not paths
    assert not typed, [t.label for t in typed]  # no free path anywhere on the page
    box = at.selectbox(key=f"{prefix}_folder")
    assert box.options == ["classroom/export/shapes · 24 images, 3 classes", "classroom/pets · 24 images, 2 classes"]
    assert "secret" not in " ".join(box.options)
    box.set_value(str((data_root / "pets").resolve())).run()
    assert not at.exception, at.exception
    if prefix == "ds":
        assert any("pets: 24 images in 2 classes" in s.value for s in at.subheader), [s.value for s in at.subheader]


def test_the_dashboards_dataset_call_checks_the_path_on_its_own(data_root, tmp_path):
    """Whatever reaches the cache (a tampered session value, a later feature) is checked against the roots."""
    assert dataset_cache.dataset("folder", str((data_root / "pets").resolve()), 0, 10).classes == ("cats", "dogs")
    with pytest.raises(roots.OutsideRootsError):
        dataset_cache.dataset("folder", str(tmp_path / "private" / "secret"), 0, 10)


def test_an_empty_root_says_where_datasets_go(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(roots.ENV, str(empty))
    dataset_cache._listed.clear()
    at = _open("ds")
    assert not at.exception
    assert any("No dataset on this server yet" in i.value and str(empty) in i.value for i in at.info)
    dataset_cache._listed.clear()
