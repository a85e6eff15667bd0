"""Explaining a whole dataset (core.audit): batched maps equal the one-image engine's, statistics mean what they
say, the heat-outside-the-object ranking finds images that are right for the wrong reasons, the export reads
back, and nothing is left on the shared model."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from core import audit, cams, datasets, embeddings, hooks, models
from core.errors import Cancelled, InvalidInputError
from tests.conftest import TINY, TINY_VIT
from tests.decoys import decoy_shapes


def _nonzero_head(model: models.LoadedModel) -> models.LoadedModel:
    """torchvision zero-initialises ViT's and some other heads: with random weights every score is 0 and every
    gradient map blank, so class-specific maps are compared with a random non-zero head."""
    head = model.module.get_submodule(model.spec.head)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.05)
    return model


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.std() == 0 and b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


# one model per family the registry knows: the offline CNN with real weights, a torchvision CNN with
# BatchNorm, the ViT layout (class token) and the Swin layout (channels-last), random weights
FAMILIES = [("efficientnet_lite0", True), ("resnet18", False), (TINY_VIT, False), ("swin_t", False)]


@pytest.mark.parametrize(("name", "pretrained"), FAMILIES)
def test_batched_maps_equal_the_one_image_engine(name, pretrained):
    model = models.load(name, device="cpu", pretrained=pretrained)
    if not pretrained:
        _nonzero_head(model)
    dataset = datasets.shapes(n=4, size=96)
    result = audit.explain_dataset(model, dataset, batch_size=4)
    assert result.maps.shape == (4, audit.MAP_SIDE, audit.MAP_SIDE) and result.maps.dtype == np.float16
    for index, image in enumerate(dataset.images):
        # the dataset path resizes the whole image to the spec's square, as cams.compute does for a square image
        (one,) = cams.compute(model, image, target=int(result.explained[index]))
        expected = audit.shrink(one.raw[None])[0]
        assert _correlation(result.maps[index], expected) >= 0.999, (name, index)
    assert hooks.count(model.module) == 0


def test_batching_does_not_change_a_map_nor_the_features(lite0):
    dataset = datasets.shapes(n=6, size=96)
    together = audit.explain_dataset(lite0, dataset, batch_size=6)
    apart = audit.explain_dataset(lite0, dataset, batch_size=1)
    np.testing.assert_array_equal(together.predictions, apart.predictions)
    for a, b in zip(together.maps, apart.maps, strict=True):
        assert _correlation(a, b) >= 0.999
    # the features are the ones today's extraction gives: one pass gives both
    extracted = embeddings.extract(lite0, dataset, batch_size=6, precision="fp32")
    np.testing.assert_allclose(together.features, extracted.features, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(together.predictions, extracted.logits.argmax(axis=1))
    np.testing.assert_allclose(together.top_probabilities[:, 0],
                               torch.from_numpy(extracted.logits).softmax(1).max(1).values.numpy(), atol=1e-5)


def test_the_results_are_filled_in_place_as_the_batches_give_them(tiny):
    """explain_dataset writes each batch into arrays allocated once (no list of batches concatenated at the end, no
    logits kept): bit for bit what explain_batch gives batch by batch, in the dataset's order."""
    dataset = datasets.shapes(n=13, size=64)
    result = audit.explain_dataset(tiny, dataset, batch_size=5)
    squares = embeddings.tensors(tiny, dataset, normalise=False)
    settings = audit.plan(tiny, dataset.classes)
    parts = [audit.explain_batch(tiny, settings, torch.stack([squares[i] for i in range(s, min(s + 5, 13))]),
                                 dataset.labels[s:s + 5], dataset.masks[s:s + 5]) for s in range(0, 13, 5)]
    for key in audit.KEPT:
        expected = np.concatenate([p[key] for p in parts])
        assert getattr(result, key).dtype == expected.dtype and getattr(result, key).flags.c_contiguous
        np.testing.assert_array_equal(getattr(result, key), expected, err_msg=key)
    assert list(result.stats) == list(parts[0]["stats"])
    for name, values in result.stats.items():
        np.testing.assert_array_equal(values, np.concatenate([p["stats"][name] for p in parts]), err_msg=name)
    assert result.maps.dtype == np.float16 and result.maps.shape == (13, audit.MAP_SIDE, audit.MAP_SIDE)
    # any order of batches lands in the same rows
    rows = None
    for start, part in reversed(list(zip(range(0, 13, 5), parts, strict=True))):
        rows = audit.fill(rows, part, start, 13)
    for key in audit.KEPT:
        np.testing.assert_array_equal(rows[key], getattr(result, key), err_msg=key)


def test_statistics_of_constructed_maps():
    side = 16
    uniform = np.ones((side, side))
    corner = np.zeros((side, side))
    corner[0, 0] = 1.0
    centre = np.zeros((side, side))
    centre[6:10, 6:10] = 1.0
    mask = np.zeros((side, side), dtype=bool)
    mask[4:12, 4:12] = True
    stats = audit.statistics(np.stack([uniform, corner, centre, np.zeros((side, side))]), [mask] * 4)
    np.testing.assert_allclose(stats["heat_entropy"][[0, 1]], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(stats["heat_half_area"][[0, 1, 2]], [0.5, 1 / side**2, 8 / side**2], atol=1e-6)
    np.testing.assert_allclose(stats["heat_border"][[1, 2]], [1.0, 0.0])
    assert stats["heat_border"][0] == pytest.approx(1 - (side - 4) ** 2 / side**2)  # a 2-px band of 16 px
    np.testing.assert_allclose([stats["centroid_x"][1], stats["centroid_y"][1]], [0.5 / side] * 2)
    np.testing.assert_allclose([stats["centroid_x"][2], stats["centroid_y"][2]], [0.5, 0.5])
    np.testing.assert_allclose(stats["heat_in_mask"][[0, 1, 2]], [0.25, 0.0, 1.0])
    assert stats["pointing_hit"].tolist()[:3] == [False, False, True]
    assert stats["heat_entropy"][3] == pytest.approx(1.0)  # an all-zero map counts as uniform, not as NaN
    assert set(audit.statistics(np.stack([uniform]))) == set(audit.STATISTICS)  # no masks: no mask statistics


def test_heat_outside_the_object_finds_the_decoys(lite0):
    """The quality bar: a known quarter of the shapes set has its object moved to a corner beside a striped border;
    ranking the images by heat on the object, lowest first, puts those first, far above chance and above what
    the mask areas alone would give (the object keeps its size, so a uniform map ranks at random)."""
    dataset, decoy = decoy_shapes(64, fraction=0.25)
    result = audit.explain_dataset(lite0, dataset, batch_size=32)
    k = int(decoy.sum())
    outside = decoy[result.ranked("heat_in_mask", descending=False)[:k]].mean()
    border = decoy[result.ranked("heat_border")[:k]].mean()
    areas = np.array([m.mean() for m in dataset.masks])
    by_area = decoy[np.argsort(areas, kind="stable")[:k]].mean()
    print(f"precision at k={k}: heat outside the object {outside:.2f}, heat on the border {border:.2f}, "
          f"mask area alone {by_area:.2f}, chance {decoy.mean():.2f}")
    assert outside >= 0.5 and outside >= by_area + 0.25
    assert border >= 0.5


def test_true_class_target_and_refusals(tiny):
    dataset = datasets.shapes(n=8, size=64)
    with pytest.raises(InvalidInputError, match="true class needs a model whose classes"):
        audit.explain_dataset(tiny, dataset, target="true")
    with pytest.raises(InvalidInputError, match="one-pass method"):
        audit.explain_dataset(tiny, dataset, method="scorecam")
    with pytest.raises(InvalidInputError, match="target"):
        audit.explain_dataset(tiny, dataset, target="both ways")
    # a model whose classes are the dataset's: "true" explains each label, and correct means something
    own = models.LoadedModel(spec=_spec_with(tiny, dataset.classes), module=torch.nn.Sequential(
        *list(tiny.module.children())[:-1], torch.nn.Linear(12, len(dataset.classes))).eval(),
        device=tiny.device, pretrained=False, params=0)
    truth = audit.explain_dataset(own, dataset, target="true", batch_size=3)
    np.testing.assert_array_equal(truth.explained, dataset.labels)
    assert truth.comparable and truth.correct.tolist() == (truth.predictions == dataset.labels).tolist()
    assert not audit.explain_dataset(tiny, dataset).comparable


def _spec_with(model, classes):
    from dataclasses import replace

    return replace(model.spec, categories=tuple(classes))


def test_stop_leaves_no_hook_and_the_model_usable(tiny):
    dataset = datasets.shapes(n=12, size=64)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled, match="stopped after 8 of 12"):
        audit.explain_dataset(tiny, dataset, batch_size=4, should_stop=stop)
    assert hooks.count(tiny.module) == 0
    assert not any(p.grad is not None for p in tiny.module.parameters())
    assert len(audit.explain_dataset(tiny, dataset, batch_size=4)) == 12


def test_export_reads_back(tmp_path, tiny):
    dataset = datasets.shapes(n=10, size=64)
    result = audit.explain_dataset(tiny, dataset, batch_size=4)
    paths = audit.write(result, tmp_path / "out", with_features=True)
    table = pq.read_table(paths["parquet"])
    for column in ("file", "label", "prediction", "probability", "correct", "heat_border", "heat_in_mask",
                   "pointing_hit", "top1", "top5_probability"):
        assert column in table.column_names, column
    assert table.num_rows == 10 and table.column("file").to_pylist() == list(dataset.files)
    assert table.column("label").to_pylist() == [dataset.classes[i] for i in dataset.labels]
    np.testing.assert_allclose(table.column("heat_border").to_numpy(), result.stats["heat_border"], rtol=1e-6)
    np.testing.assert_array_equal(np.load(paths["maps"]), result.maps)
    np.testing.assert_array_equal(np.load(paths["features"]), result.features)
    assert paths["csv"].read_text().splitlines()[0].startswith('"file","label","prediction"')
    assert b"visionlens" in table.schema.metadata


def test_two_backbones_agreement(tiny, lite0):
    dataset = datasets.shapes(n=8, size=64)
    first = audit.explain_dataset(lite0, dataset, batch_size=8)
    same, per_class = audit.agreement(first, first)
    np.testing.assert_allclose(same, 1.0, atol=1e-6)
    assert [c["class"] for c in per_class] == list(dataset.classes)
    other, _ = audit.agreement(first, audit.explain_dataset(tiny, dataset, batch_size=8))
    assert other.shape == (8,) and (other < 0.999).any()
    with pytest.raises(InvalidInputError, match="same dataset"):
        audit.agreement(first, audit.explain_dataset(lite0, datasets.shapes(seed=1, n=8, size=64)))


def test_per_class_views(lite0):
    dataset = datasets.shapes(n=16, size=64)
    result = audit.explain_dataset(lite0, dataset, batch_size=8)
    means = result.mean_maps()
    assert means.shape == (len(dataset.classes), audit.MAP_SIDE, audit.MAP_SIDE)
    first = dataset.labels == 0
    np.testing.assert_allclose(means[0], result.maps[first].astype(np.float32).mean(axis=0), rtol=1e-5)
    assert np.isnan(result.mean_maps(correct=True)).all()  # ImageNet classes are not the shapes: nothing is correct
    summary = result.summary()
    assert [row["images"] for row in summary] == list(dataset.counts().values())
    assert result.to_dict()["accuracy"] is None and result.to_dict()["images"] == 16
    with pytest.raises(InvalidInputError, match="Unknown statistic"):
        result.ranked("nope")


def test_cli_audit_writes_the_table_and_prints_the_summary(tmp_path, capsys):
    from core.__main__ import main

    out = tmp_path / "audit"
    assert main(["audit", "shapes", "--model", TINY, "--limit", "12", "--batch-size", "5", "--out", str(out),
                 "--features", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 12 and printed["method"] == "gradcam" and printed["target"] == "predicted"
    assert [row["class"] for row in printed["classes"]] == list(datasets.shapes().classes)
    table = pq.read_table(out / "audit.parquet")
    assert table.num_rows == 12 and {"file", "label", "prediction", "probability", "correct", "heat_border",
                                     "heat_in_mask", "pointing_hit"} <= set(table.column_names)
    assert np.load(out / "maps.npy").shape == (12, audit.MAP_SIDE, audit.MAP_SIDE)
    assert np.load(out / "features.npy").shape[0] == 12
    assert main(["audit", "shapes", "--model", TINY, "--limit", "8", "--out", str(tmp_path / "table")]) == 0
    text = capsys.readouterr().out
    assert "heat_in_mask" in text and "circle" in text and "wrote" in text
    assert main(["audit", "shapes", "--model", TINY, "--limit", "8", "--method", "scorecam", "--out", str(out)]) == 2
    assert "one-pass method" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["audit", "shapes", "--model", TINY, "--out", str(tmp_path / "file")]) == 2


def test_cli_audit_embed_maps_the_audits_own_features(tmp_path, capsys):
    """--embed writes embedding.csv: the t-SNE (or PCA) of the audit's features, the map `embed` would draw of them
    (embeddings.tsne with the same seed), one row per image in the table's order."""
    import csv

    from core.__main__ import main

    out = tmp_path / "audit"
    assert main(["audit", "shapes", "--model", TINY, "--limit", "16", "--batch-size", "5", "--out", str(out),
                 "--features", "--embed", "tsne", "--seed", "3"]) == 0
    assert "embedding.csv" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "embedding.csv").open()))
    table = pq.read_table(out / "audit.parquet").to_pydict()
    assert [r["file"] for r in rows] == table["file"] and [r["label"] for r in rows] == table["label"]
    assert [r["prediction"] for r in rows] == table["prediction"]
    points = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    expected = embeddings.tsne(np.load(out / "features.npy"), seed=3)
    np.testing.assert_allclose(points, expected, atol=1e-4)
    assert main(["audit", "shapes", "--model", TINY, "--limit", "16", "--out", str(out), "--features",
                 "--embed", "pca"]) == 0
    rows = list(csv.DictReader((out / "embedding.csv").open()))
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in rows],
                               embeddings.pca(np.load(out / "features.npy")), atol=1e-4)
    with pytest.raises(SystemExit, match="2"):
        main(["audit", "shapes", "--model", TINY, "--limit", "8", "--embed", "umap", "--out", str(out)])


def test_download_bytes_and_reviews(tiny):
    import io

    dataset = datasets.shapes(n=6, size=64)
    result = audit.explain_dataset(tiny, dataset, batch_size=6)
    table = pq.read_table(io.BytesIO(audit.table_bytes(result, "parquet")))
    assert table.column("file").to_pylist() == list(dataset.files)
    assert audit.table_bytes(result, "csv").decode().count("\n") == 7
    titles = [r[0] for r in audit.reviews(result)]
    assert "Most heat outside the object" in titles and "Correct, but most heat outside the object" not in titles
    no_masks = audit.explain_dataset(tiny, datasets.digits(n=12), batch_size=6)
    assert all(r[1] not in audit.MASK_STATISTICS for r in audit.reviews(no_masks))
    up = result.heatmap(0, 50, 30)
    assert up.shape == (30, 50) and 0 <= up.min() <= up.max() <= 1
    with pytest.raises(InvalidInputError):
        audit.table_bytes(result, "xlsx")


def test_export_says_nothing_of_correct_for_other_classes_and_is_spreadsheet_safe(tmp_path, tiny):
    import io
    from dataclasses import replace

    dataset = datasets.shapes(n=6, size=64)
    hostile = replace(dataset, files=("=HYPERLINK(\"http://x\")", *dataset.files[1:]))
    result = audit.explain_dataset(tiny, hostile, batch_size=6)
    table = pq.read_table(io.BytesIO(audit.table_bytes(result, "parquet")))
    assert table.column("correct").null_count == 6  # the tiny model's classes are not the shapes
    text = audit.table_bytes(result, "csv").decode()
    assert "\"'=HYPERLINK(" in text and "\n\"=HYPERLINK" not in text
    assert table.column("file").to_pylist()[0].startswith("=")  # Parquet keeps the name as it is
    _, per_class = audit.agreement(result, result)
    assert "both_correct" not in per_class[0]


def test_the_border_baseline():
    side = audit.MAP_SIDE
    uniform = audit.statistics(np.ones((1, side, side)))["heat_border"][0]
    assert uniform == pytest.approx(audit.uniform_border()) and 0.45 < uniform < 0.5  # 4 px of 28 on each edge
