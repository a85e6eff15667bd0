"""core.probing: a linear probe as the backbone's head, so heatmaps explain the probe's classes (issue #4)."""

import numpy as np
import pytest
import torch

from core import cams, datasets, embeddings, evaluation, hooks, predictions, preprocessing, probing
from core.errors import InvalidInputError


def probed(model, data, *, size: int | None = None, batch_size: int = 8):
    """(features, linear-probe evaluation) of `model` on `data`, extracted in fp32 at `size`."""
    extracted = embeddings.extract(model, data, batch_size=batch_size, size=size, precision="fp32")
    result = evaluation.evaluate(extracted.features, extracted.logits, data.labels, data.classes,
                                 categories=model.categories, mode="linear probe", seed=0)
    return extracted, result


def _probe_logits(model, image) -> np.ndarray:
    """The probe model's logits for one image, preprocessed exactly as cams.compute does it."""
    with model.lock, torch.inference_mode():
        return model.module(preprocessing.to_tensor(image, model.spec).to(model.device))[0].float().cpu().numpy()


@pytest.mark.parametrize("classes", [2, 4])
def test_folded_probe_scores_equal_the_pipeline_decision_function(classes):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(classes), 15)
    features = rng.normal(size=(len(labels), 6)).astype(np.float32) * rng.uniform(0.1, 20, 6).astype(np.float32)
    features += labels[:, None] * 1.5 + rng.normal(5, 1, 6).astype(np.float32)  # means far from 0: the scaler matters
    probe = evaluation.linear_probe(features, labels, classes=classes + 1)  # the last class has no image
    scores = probe.logits(features)
    assert scores.shape == (len(labels), classes + 1)
    decision = probe.classifier.decision_function(features)
    if classes == 2:  # one score d for class 1: the logits are (-d/2, d/2)
        np.testing.assert_allclose(scores[:, 1] - scores[:, 0], decision, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores[:, 1], decision / 2, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(scores[:, :classes], decision, rtol=1e-4, atol=1e-4)
    assert (scores[:, classes] < scores[:, :classes].min(axis=1) - 100).all()  # never predicted
    assert np.array_equal(scores.argmax(axis=1), probe.classifier.predict(features))
    assert np.array_equal(scores[probe.test].argmax(axis=1), probe.predicted)


@pytest.fixture(scope="module")
def tiny_probe(tiny):
    data = datasets.shapes(3, 24, 48)
    return (data, *probed(tiny, data))


def test_probe_model_logits_are_the_probes_scores(tiny, tiny_probe):
    data, extracted, result = tiny_probe
    head_before = hooks.find(tiny.module, tiny.spec.head).weight.clone()
    model = probing.probe_model(tiny, result, size=extracted.image_size)
    assert model.categories == data.classes and model.lock is not tiny.lock and model.module is not tiny.module
    assert model.spec.fixed_size and model.spec.input_size == (extracted.image_size, extracted.image_size)
    # the shared model is untouched: same head, same classes
    assert tiny.categories == tuple(f"class {i}" for i in range(10))
    assert torch.equal(hooks.find(tiny.module, tiny.spec.head).weight, head_before)
    rows = result.indices.tolist()
    logits = np.stack([_probe_logits(model, data.images[r]) for r in rows])
    decision = result.probe.classifier.decision_function(extracted.features[rows])
    np.testing.assert_allclose(logits, decision, rtol=1e-3, atol=1e-3 * np.abs(decision).max())
    assert np.array_equal(logits.argmax(axis=1), result.predicted)
    for row, expected in zip(rows, result.predicted.tolist(), strict=True):
        top = predictions.predict(model, data.images[row], top_k=1)[0]
        assert top.index == expected and top.label == data.classes[expected]


def test_cams_explain_the_probe_class_not_the_imagenet_class(tiny, tiny_probe):
    data, extracted, result = tiny_probe
    model = probing.probe_model(tiny, result, size=extracted.image_size)
    differs = 0
    for row, guess in zip(result.indices[:6].tolist(), result.predicted[:6].tolist(), strict=True):
        image = data.images[row]
        (probe_cam,) = cams.compute(model, image, target=guess)
        (imagenet_cam,) = cams.compute(tiny, image, target=guess)
        assert probe_cam.label == data.classes[guess] and imagenet_cam.label == f"class {guess}"
        assert probe_cam.heatmap.shape == imagenet_cam.heatmap.shape == (48, 48)
        differs += np.abs(probe_cam.heatmap - imagenet_cam.heatmap).max() > 0.05
        (default,) = cams.compute(model, image)  # no target: the probe's own prediction
        assert default.target == guess
    assert differs >= 4, differs
    assert hooks.count(model.module) == 0 and hooks.count(tiny.module) == 0


def test_probe_model_on_lite0_predicts_as_the_evaluation(lite0):
    data = datasets.shapes(5, 16, 96)
    extracted, result = probed(lite0, data, size=96, batch_size=16)
    model = probing.probe_model(lite0, result, size=96)
    rows = result.indices.tolist()
    logits = np.stack([_probe_logits(model, data.images[r]) for r in rows])
    decision = result.probe.classifier.decision_function(extracted.features[rows])
    np.testing.assert_allclose(logits, decision, rtol=1e-3, atol=1e-3 * np.abs(decision).max())
    assert np.array_equal(logits.argmax(axis=1), result.predicted)
    row, guess = rows[0], int(result.predicted[0])
    (probe_cam,) = cams.compute(model, data.images[row], target=guess)
    (imagenet_cam,) = cams.compute(lite0, data.images[row], target=guess)
    assert probe_cam.label == data.classes[guess] and imagenet_cam.label == lite0.categories[guess]
    assert np.abs(probe_cam.heatmap - imagenet_cam.heatmap).max() > 0.05
    assert len(lite0.categories) == 1000 and hooks.find(lite0.module, lite0.spec.head).out_features == 1000


def test_zero_shot_has_no_probe_model(tiny):
    mapping_classes = ("goldfish", "tabby")
    categories = tuple(f"c{i}" for i in range(1000))
    categories = categories[:1] + ("goldfish",) + categories[2:281] + ("tabby",) + categories[282:]
    logits = np.zeros((4, 1000), np.float32)
    logits[[0, 1], 1], logits[[2, 3], 281] = 5, 5
    result = evaluation.evaluate(np.zeros((4, 12)), logits, np.array([0, 0, 1, 1]), mapping_classes,
                                 categories=categories)
    assert result.method == "zero-shot" and result.probe is None
    with pytest.raises(InvalidInputError, match="no probe"):
        probing.probe_model(tiny, result)
