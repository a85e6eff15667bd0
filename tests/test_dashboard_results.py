"""Streamlit AppTest: the Datasets page opens a results folder under a data root (either engine's: here the in-process
writer's, and a folder of shards as the Ray engine writes them) and shows its per-class statistics, confusion matrix,
mean maps and review galleries from the stored maps, and a t-SNE of the stored features; nothing outside the roots."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from core import audit, datasets, embeddings, models, results, roots
from core.errors import InvalidInputError
from dashboard import audit_view

config.set_option("client.showErrorDetails", "full")
PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "datasets.py")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A data root holding an in-process audit folder and the same audit as shards with map and features columns."""
    root = tmp_path_factory.mktemp("root")
    model = models.load("shapes_cnn", device="cpu")
    result = audit.explain_dataset(model, datasets.shapes(n=40, size=64), batch_size=20)
    audit.write(result, root / "inprocess", with_features=True)
    shards = root / "sharded"
    shards.mkdir()
    columns = {"index": np.arange(len(result)), **result.rows()}
    columns["map"] = pa.array([m.tobytes() for m in result.maps], pa.binary(result.maps[0].nbytes))
    columns["features"] = pa.FixedSizeListArray.from_arrays(pa.array(result.features.ravel()), result.features.shape[1])
    table = pa.table(columns)
    order = np.random.default_rng(0).permutation(len(result))  # shards arrive in any order
    pq.write_table(table.take(order[:25]), shards / "part-00000.parquet")
    pq.write_table(table.take(order[25:]), shards / "part-00001.parquet")
    (shards / "summary.json").write_text(json.dumps({**result.to_dict(), **audit.described(result), "engine": "ray",
                                                     "nodes": {"a": 1, "b": 2}}))
    return root, result


def test_both_layouts_read_back_as_the_same_audit(written):
    root, result = written
    for name in ("inprocess", "sharded"):
        back = results.read(root / name).audit
        np.testing.assert_array_equal(back.predictions, result.predictions)
        np.testing.assert_array_equal(back.maps, result.maps)
        np.testing.assert_array_equal(back.features, result.features)
        assert back.files == result.files and set(back.stats) == set(result.stats)
    found = results.list_folders((root,))
    assert [(f.name.split("/", 1)[1], f.engine) for f in found] == [("inprocess", "in-process"), ("sharded", "ray")]


def test_an_incomplete_or_hostile_folder_is_refused(written, tmp_path):
    root, _ = written
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text((root / "sharded" / "summary.json").read_text())
    (broken / "part-00000.parquet").write_bytes((root / "sharded" / "part-00000.parquet").read_bytes())
    with pytest.raises(InvalidInputError, match="incomplete"):
        results.read(broken)
    (broken / "summary.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="JSON object"):
        results.read(broken)
    with pytest.raises(roots.OutsideRootsError):
        roots.resolve(broken, (root,))


def test_tsne_on_a_sample_places_the_rest_by_transform():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, (3, 20))
    labels = np.repeat(np.arange(3), 120)
    features = (centres[labels] + rng.normal(0, 1, (360, 20))).astype(np.float32)
    points, fitted = embeddings.tsne_sampled(features, sample=150, iterations=300, seed=0)
    assert points.shape == (360, 2) and fitted.sum() == 150 and np.isfinite(points).all()
    # a placed point lands among the fitted points of its own cluster
    centre = np.stack([points[fitted & (labels == c)].mean(0) for c in range(3)])
    nearest = np.linalg.norm(points[~fitted][:, None] - centre[None], axis=2).argmin(1)
    assert (nearest == labels[~fitted]).mean() >= 0.95


def test_the_datasets_page_opens_a_results_folder(written, monkeypatch):
    root, result = written
    monkeypatch.setenv(roots.ENV, str(root))
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["ds_results"] = True
    at.run()
    assert not at.exception, at.exception
    folder = at.selectbox(key="results_folder")
    assert len(folder.options) == 2
    for chosen in folder.options:
        at.selectbox(key="results_folder").set_value(chosen).run()
        assert not at.exception, at.exception
        table = next(d.value for d in at.dataframe if "heat_in_mask" in d.value.columns)
        assert list(table["class"]) == list(result.classes)
        captions = [c for image in at.get("image") for c in image.captions]
        assert sum("heat in mask" in c for c in captions) == audit_view.GALLERY  # the review gallery, stored maps
        assert any("correct" in c for c in captions)  # the per-class mean maps
        assert "Confusion matrix and metrics" in [h.value for h in at.header]
    at.toggle(key="results_tsne").set_value(True).run()
    assert not at.exception, at.exception
    assert "Feature map" in [h.value for h in at.header]
