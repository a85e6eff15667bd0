"""Audit target "both" (core.audit, core.audit_both): each image's map of its predicted class (`maps`, what a
"predicted" audit gives) and of its true class (`maps_true`, what a "true" audit gives), the second computed only
for the wrong predictions; the statistics again with a _true suffix, written, read back (either engine's layout)
and asked for on the command line; refused for a model whose classes are not the dataset's."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import audit, audit_both, cams, datasets, models, results
from core.errors import InvalidInputError
from tests.conftest import TINY

PLAIN = (*audit.STATISTICS, *audit.MASK_STATISTICS)


@pytest.fixture(scope="module")
def shapes_cnn():
    return models.load("shapes_cnn", device="cpu")


@pytest.fixture(scope="module")
def three(shapes_cnn):
    """The same 48 shapes audited for the predicted class, the true class and both (batches of 16)."""
    dataset = datasets.shapes(n=48, size=64)
    return dataset, {target: audit.explain_dataset(shapes_cnn, dataset, target=target, batch_size=16)
                     for target in audit.TARGETS}


def test_both_holds_the_predicted_and_the_true_audits_maps(three):
    dataset, got = three
    both, predicted, true = got["both"], got["predicted"], got["true"]
    wrong = both.predictions != both.labels
    assert 0 < wrong.sum() < len(both)  # the Shapes CNN gets some wrong: both kinds of row are tested
    assert both.target == "both" and predicted.maps_true is None and true.maps_true is None
    np.testing.assert_array_equal(both.maps, predicted.maps)
    np.testing.assert_array_equal(both.explained, predicted.explained)
    assert both.maps_true.shape == both.maps.shape and both.maps_true.dtype == np.float16
    np.testing.assert_allclose(both.maps_true.astype(np.float32), true.maps.astype(np.float32), atol=2e-3)
    np.testing.assert_array_equal(both.maps_true[~wrong], both.maps[~wrong])  # one map where they agree
    assert all(np.abs(both.maps_true[i].astype(np.float32) - both.maps[i].astype(np.float32)).max() > 0.01
               for i in np.flatnonzero(wrong))  # another class, another map
    for name in PLAIN:
        np.testing.assert_array_equal(both.stats[name], predicted.stats[name], err_msg=name)
        np.testing.assert_allclose(both.stats[f"{name}_true"].astype(np.float64),
                                   true.stats[name].astype(np.float64), atol=2e-3, err_msg=name)
    np.testing.assert_allclose(both.heatmap(int(np.flatnonzero(wrong)[0]), 40, 40, true=True),
                               true.heatmap(int(np.flatnonzero(wrong)[0]), 40, 40), atol=2e-3)


def test_the_second_map_is_computed_only_for_the_wrong_predictions(shapes_cnn, monkeypatch):
    dataset = datasets.shapes(n=48, size=64)
    calls = []
    weigh = cams.weigh

    def counted(name, module, tensor, activations, grads, targets, **kwargs):
        calls.append(len(targets))
        return weigh(name, module, tensor, activations, grads, targets, **kwargs)

    monkeypatch.setattr(cams, "weigh", counted)
    both = audit.explain_dataset(shapes_cnn, dataset, target="both", batch_size=48)
    wrong = int((both.explained != both.labels).sum())
    assert calls == [48, wrong]
    calls.clear()
    agnostic = audit.explain_dataset(shapes_cnn, dataset, target="both", method="eigencam", batch_size=48)
    assert calls == [48]  # a class-agnostic map is the same map for every class
    np.testing.assert_array_equal(agnostic.maps_true, agnostic.maps)


def test_the_helper_keeps_the_rows_that_agree():
    maps = np.random.default_rng(0).random((4, 6, 6)).astype(np.float16)
    stats = audit.statistics(maps)
    asked = []

    def explain(rows):
        asked.append(rows.tolist())
        return np.zeros((len(rows), 6, 6), np.float16)

    out = audit_both.true_maps(maps, stats, np.array([0, 1, 2, 3]), np.array([0, 2, 2, 1]), None, explain)
    assert asked == [[1, 3]]
    np.testing.assert_array_equal(out["maps_true"][[0, 2]], maps[[0, 2]])
    assert not out["maps_true"][[1, 3]].any()
    assert set(out["stats"]) == {f"{k}_true" for k in stats}
    np.testing.assert_array_equal(out["stats"]["heat_border_true"][[0, 2]], stats["heat_border"][[0, 2]])
    assert out["stats"]["heat_entropy_true"][1] == pytest.approx(1.0)  # an all-zero map counts as uniform


def test_a_model_of_other_classes_refuses_both(tiny):
    with pytest.raises(InvalidInputError, match="true class beside the predicted one needs a model whose classes"):
        audit.explain_dataset(tiny, datasets.shapes(n=4, size=64), target="both")


def test_both_is_written_and_read_back_in_either_layout(three, tmp_path):
    _, got = three
    both = got["both"]
    paths = audit.write(both, tmp_path / "whole")
    table = pq.read_table(paths["parquet"])
    for name in PLAIN:
        assert f"{name}_true" in table.column_names and name in table.column_names
    np.testing.assert_array_equal(np.load(paths["maps_true"]), both.maps_true)
    assert json.loads(paths["summary"].read_text())["target"] == "both"
    # the Ray engine's layout: map and map_true columns in shards
    shards = tmp_path / "sharded"
    shards.mkdir()
    columns = {"index": np.arange(len(both)), **both.rows()}
    for key, column in (("maps", "map"), ("maps_true", "map_true")):
        values = getattr(both, key)
        columns[column] = pa.array([m.tobytes() for m in values], pa.binary(values[0].nbytes))
    pq.write_table(pa.table(columns), shards / "part-00000.parquet")
    (shards / "summary.json").write_text(json.dumps({**both.to_dict(), **audit.described(both), "engine": "ray"}))
    for folder in (tmp_path / "whole", shards):
        back = results.read(folder).audit
        np.testing.assert_array_equal(back.maps_true, both.maps_true)
        np.testing.assert_array_equal(back.maps, both.maps)
        assert set(back.stats) == set(both.stats) and back.stats["pointing_hit_true"].dtype == bool
        np.testing.assert_array_equal(back.stats["heat_in_mask_true"], both.stats["heat_in_mask_true"])
    # a "predicted" audit written over it leaves no stale maps_true.npy behind
    audit.write(got["predicted"], tmp_path / "whole")
    assert not (tmp_path / "whole" / "maps_true.npy").exists()
    assert results.read(tmp_path / "whole").audit.maps_true is None
    (shards / "summary.json").write_text(json.dumps({**both.to_dict(), **audit.described(both)}))
    pq.write_table(pa.table({k: v for k, v in columns.items() if k != "map_true"}), shards / "part-00000.parquet")
    with pytest.raises(InvalidInputError, match="maps_true.npy or a map_true column"):
        results.read(shards)


def test_cli_audit_target_both(tmp_path, capsys):
    from core.__main__ import main

    out = tmp_path / "audit"
    assert main(["audit", "shapes", "--model", "shapes_cnn", "--limit", "12", "--out", str(out),
                 "--target", "both"]) == 0
    text = capsys.readouterr().out
    assert "maps of the predicted and the true class" in text and "maps_true.npy" in text
    table = pq.read_table(out / "audit.parquet")
    assert {"heat_in_mask_true", "pointing_hit_true", "heat_border_true"} <= set(table.column_names)
    assert np.load(out / "maps_true.npy").shape == (12, audit.MAP_SIDE, audit.MAP_SIDE)
    assert main(["audit", "shapes", "--model", TINY, "--limit", "4", "--out", str(out), "--target", "both"]) == 2
    assert "classes are the dataset's" in capsys.readouterr().err
