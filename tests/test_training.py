"""core.training: feature extraction and fine-tuning on the built-in sets, baselines, stops and learning rates.

The accuracy tests use the offline EfficientNet-Lite0 on small samples (digits 500 at 112 px, shapes 160
at 96 px): the frozen features are extracted once per module, then each head trains in well under a second.
Everything else runs on the tiny test CNN.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import baselines, cams, checkpoints, datasets, embeddings, fitting, predictions, preprocessing, splits, training
from core.__main__ import main
from core.errors import InvalidInputError
from tests.conftest import TINY

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def digits():
    return datasets.digits(0, 500)


@pytest.fixture(scope="module")
def digits_features(lite0, digits):
    return embeddings.extract(lite0, digits, size=112, precision="fp32")


@pytest.fixture(scope="module")
def digits_run(lite0, digits, digits_features):
    config = training.TrainConfig(image_size=112, epochs=10, lr_head=3e-3, train_fraction=0.6, val_fraction=0.15)
    return training.train(lite0, digits, config, features=digits_features)


@pytest.fixture(scope="module")
def shapes():
    return datasets.shapes(0, 48, 64)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# Accuracy with Lite0 on CPU


def test_feature_extraction_on_digits_reaches_90_percent_in_seconds(digits_run, digits):
    run = digits_run
    assert run.accuracy >= 0.9, [round(s.val_accuracy, 3) for s in run.history]
    assert run.train_seconds < 30  # ten epochs on cached features
    assert run.ended == "completed" and len(run.history) == 10
    assert run.best_epoch == 1 + int(np.argmin([s.val_loss for s in run.history]))
    assert run.classes == tuple(str(d) for d in range(10)) and run.model.categories == run.classes
    assert run.trainable_params == (1280 + 1) * 10 and run.total_params == run.model.params
    assert run.test.confusion.sum() == len(run.split.test) and len(run.test.per_class) == 10
    assert 0.85 <= run.macro_f1 <= 1 and 0.85 <= run.macro_precision <= 1 and 0.85 <= run.macro_recall <= 1
    assert run.model.spec.input_size == (112, 112) and run.model.spec.build is baselines.no_builder


def test_the_assembled_model_matches_the_head_on_features(digits_run, digits, digits_features):
    run = digits_run
    rows = run.split.test[:8]
    batch = torch.cat([preprocessing.to_tensor(digits.images[int(i)], run.model.spec) for i in rows])
    with torch.no_grad():
        logits = run.model.module(batch)
        head = run.model.module.get_submodule(run.model.spec.head)
        from_features = head(torch.from_numpy(digits_features.features[rows]))
    assert torch.allclose(logits, from_features, atol=1e-3)
    assert np.array_equal(logits.argmax(1).numpy(), run.test.predicted[:8])


def test_feature_extraction_on_shapes_reaches_90_percent(lite0):
    shapes = datasets.shapes(0, 160, 128)
    run = training.train(lite0, shapes, training.TrainConfig(image_size=96, epochs=5, lr_head=3e-3))
    assert run.accuracy >= 0.9 and len(run.history) == 5
    assert run.feature_seconds > 0  # computed once, inside the run


def test_lite0_export_import_gives_identical_logits(digits_run, digits, tmp_path):
    exported = checkpoints.export(digits_run.model, tmp_path)
    back = checkpoints.load(tmp_path)
    batch = torch.cat([preprocessing.to_tensor(digits.images[i], back.spec) for i in range(4)])
    with torch.no_grad():
        assert torch.equal(digits_run.model.module(batch), back.module(batch))
    assert back.categories == digits_run.classes and exported.weights.stat().st_size < 20 * 2**20
    assert predictions.predict(back, digits.images[0], top_k=3)[0].label in back.categories


# ---------------------------------------------------------------------------------------------
# The shared model is never trained; frozen parameters stay frozen


def test_fine_tuning_keeps_frozen_parameters_bit_identical(lite0, shapes):
    before = _snapshot(lite0)
    config = training.TrainConfig(strategy="fine-tune", unfreeze_stages=1, epochs=1, image_size=64, batch_size=16,
                                  lr_backbone=1e-3, random_crop=True, flip=True)
    run = training.train(lite0, shapes, config)
    assert _same(before, _snapshot(lite0)), "the shared model changed"
    assert not any(p.requires_grad or p.grad is not None for p in lite0.module.parameters())
    assert run.model.module is not lite0.module and run.model.lock is not lite0.lock
    after = dict(run.model.module.state_dict())
    trained_prefixes = ("conv_head.", "bn2.", "classifier.")  # the last stage of Lite0 ends at bn2 (conv_head + bn2)
    for name, value in before.items():
        if name.startswith("classifier."):
            continue  # replaced by the new head
        if name.startswith(trained_prefixes):
            continue
        assert torch.equal(value, after[name]), f"frozen {name} changed"  # buffers of frozen batch norms too
    assert not torch.equal(before["conv_head.weight"], after["conv_head.weight"]), "the unfrozen stage did not train"
    assert after["classifier.weight"].shape == (4, 1280)
    assert run.trainable_params == sum(g.params for g in run.groups) and {g.name for g in run.groups} == {"head", "backbone"}
    assert not any(p.requires_grad for p in run.model.module.parameters())


def test_parameter_summary_before_training(lite0, tiny, shapes):
    fe = training.parameter_summary(lite0, "feature-extraction", classes=10)
    assert fe.trainable == (1280 + 1) * 10 and fe.frozen == sum(p.numel() for p in lite0.module.parameters()) - 1281000
    assert [g.name for g in fe.groups][-1] == "new head" and not any(g.trainable for g in fe.groups[:-1])
    assert fe.groups[0].modules == ("conv_stem", "bn1", "blocks.0")
    two = training.parameter_summary(lite0, "fine-tune", 2, classes=10, head="mlp", hidden=64)
    assert [g.trainable for g in two.groups] == [False] * 6 + [True] * 3
    assert two.groups[-1].params == (1280 + 1) * 64 + (64 + 1) * 10
    everything = training.parameter_summary(lite0, "fine-tune", None, classes=10)
    assert everything.frozen == 0
    with pytest.raises(InvalidInputError, match="8 stages"):
        training.parameter_summary(lite0, "fine-tune", 9, classes=10)
    small = training.parameter_summary(None, "small-cnn", classes=4)
    assert small.frozen == 0 and small.trainable == sum(p.numel() for p in baselines.small_cnn(4).parameters())
    run = training.train(tiny, shapes, training.TrainConfig(strategy="fine-tune", unfreeze_stages=None, epochs=1,
                                                            image_size=32))
    assert run.trainable_params == training.parameter_summary(tiny, "fine-tune", None, classes=4).trainable


# ---------------------------------------------------------------------------------------------
# Learning rates per group


def test_optimizer_groups_apply_their_own_learning_rates():
    torch.manual_seed(0)
    head, backbone = torch.nn.Linear(4, 3), torch.nn.Linear(5, 4)
    config = training.TrainConfig(optimizer="sgd", momentum=0.0, lr_head=0.1, lr_backbone=0.001)
    optim = fitting.optimizer([("head", list(head.parameters()), config.lr_head),
                                ("backbone", list(backbone.parameters()), config.lr_backbone)], config)
    assert [(g["name"], g["lr"]) for g in optim.param_groups] == [("head", 0.1), ("backbone", 0.001)]
    before = [p.detach().clone() for p in (*head.parameters(), *backbone.parameters())]
    head(backbone(torch.randn(8, 5))).square().sum().backward()
    grads = [p.grad.clone() for p in (*head.parameters(), *backbone.parameters())]
    optim.step()
    lrs = [0.1, 0.1, 0.001, 0.001]
    for p, old, grad, lr in zip((*head.parameters(), *backbone.parameters()), before, grads, lrs, strict=True):
        assert torch.allclose(p.detach() - old, -lr * grad, atol=1e-7)
    for name in ("adam", "adamw"):
        assert isinstance(fitting.optimizer([("head", list(head.parameters()), 0.1)],
                                             dataclasses.replace(config, optimizer=name)),
                          torch.optim.Adam if name == "adam" else torch.optim.AdamW)


def test_a_zero_backbone_learning_rate_really_freezes_the_unfrozen_stage(tiny, shapes):
    config = training.TrainConfig(strategy="fine-tune", unfreeze_stages=None, optimizer="sgd", lr_head=0.05,
                                  lr_backbone=0.0, epochs=1, image_size=32, batch_size=8)
    still = training.train(tiny, shapes, config)
    moved = training.train(tiny, shapes, dataclasses.replace(config, lr_backbone=0.05))
    assert {g.name: g.lr for g in still.groups} == {"head": 0.05, "backbone": 0.0}
    shared = dict(tiny.module.state_dict())
    for name in ("0.weight", "2.weight", "3.weight"):
        assert torch.equal(still.model.module.state_dict()[name], shared[name])
        assert not torch.equal(moved.model.module.state_dict()[name], shared[name])
    assert not torch.equal(still.model.module.state_dict()["7.weight"][:4], shared["7.weight"][:4])


# ---------------------------------------------------------------------------------------------
# Early stopping and the stop button keep the best checkpoint


def _val_loss(run, dataset) -> float:
    rows = run.split.val
    batch = torch.cat([preprocessing.to_tensor(dataset.images[int(i)], run.model.spec) for i in rows])
    with torch.no_grad():
        logits = run.model.module(batch)
    return float(F.cross_entropy(logits, torch.from_numpy(dataset.labels[rows])))


def test_early_stopping_keeps_the_best_epoch(tiny):
    noisy = datasets.shapes(0, 60, 64)
    noisy = dataclasses.replace(noisy, labels=np.random.default_rng(1).permutation(noisy.labels))  # nothing to learn
    config = training.TrainConfig(epochs=40, patience=3, lr_head=0.1, image_size=32, hidden=64, head="mlp", dropout=0.0)
    run = training.train(tiny, noisy, config)
    losses = [s.val_loss for s in run.history]
    assert run.ended == "early stopping" and len(run.history) < 40
    assert run.best_epoch == 1 + int(np.argmin(losses)) and len(run.history) == run.best_epoch + 3
    assert [s.best for s in run.history].count(True) >= 1 and run.history[run.best_epoch - 1].best
    assert _val_loss(run, noisy) == pytest.approx(losses[run.best_epoch - 1], rel=1e-4, abs=1e-5)


def test_the_stop_button_keeps_the_best_epoch_so_far(tiny, shapes):
    seen: list[training.EpochStats] = []
    config = training.TrainConfig(strategy="fine-tune", unfreeze_stages=None, epochs=50, image_size=32, lr_head=0.05)
    run = training.train(tiny, shapes, config, on_epoch=seen.append, should_stop=lambda: len(seen) >= 3)
    assert run.ended == "stopped" and len(run.history) == 3 and seen == list(run.history)
    losses = [s.val_loss for s in run.history]
    assert run.best_epoch == 1 + int(np.argmin(losses))
    assert _val_loss(run, shapes) == pytest.approx(losses[run.best_epoch - 1], rel=1e-4, abs=1e-5)
    with pytest.raises(InvalidInputError, match="before the first epoch"):
        training.train(tiny, shapes, config, should_stop=lambda: True)


# ---------------------------------------------------------------------------------------------
# Baselines, CAMs, configuration


@pytest.mark.parametrize("strategy, layer", [("small-cnn", "features.conv2"), ("deeper-cnn", "features.block4")])
def test_baselines_train_on_the_same_split_and_explain(tiny, shapes, strategy, layer):
    config = training.TrainConfig(strategy=strategy, epochs=2, image_size=32, batch_size=8)
    run = training.train(None, shapes, config, device="cpu")
    reference = splits.stratified(shapes.labels, test_fraction=0.15, val_fraction=0.15, seed=0)
    assert all(np.array_equal(getattr(run.split, part), getattr(reference, part)) for part in ("train", "val", "test"))
    assert run.model.spec.cam_layer == layer and run.model.spec.name == strategy.replace("-", "_")
    assert run.trainable_params == run.total_params and len(run.history) == 2
    (cam,) = cams.compute(run.model, shapes.images[0], methods=["gradcam"])
    assert cam.heatmap.shape == (64, 64) and cam.label in shapes.classes


def test_gradcam_works_on_frozen_and_fine_tuned_models_without_touching_them(tiny, shapes):
    shared = _snapshot(tiny)
    for strategy in ("feature-extraction", "fine-tune"):
        run = training.train(tiny, shapes, training.TrainConfig(strategy=strategy, epochs=1, image_size=32))
        mine = _snapshot(run.model)
        results = cams.compute(run.model, shapes.images[1], methods=["gradcam", "layercam", "fullgrad"], target=2)
        assert all(r.label == shapes.classes[2] and np.isfinite(r.heatmap).all() for r in results)
        assert _same(mine, _snapshot(run.model))
        assert not any(p.requires_grad or p.grad is not None for p in run.model.module.parameters())
    assert _same(shared, _snapshot(tiny))
    assert not any(p.requires_grad for p in tiny.module.parameters())


def test_runs_are_seeded_and_leave_the_global_rng_alone(tiny, shapes):
    state = torch.get_rng_state()
    config = training.TrainConfig(strategy="fine-tune", epochs=1, image_size=32, random_crop=True, flip=True)
    first, second = training.train(tiny, shapes, config), training.train(tiny, shapes, config)
    assert torch.equal(state, torch.get_rng_state())
    assert [s.val_loss for s in first.history] == [s.val_loss for s in second.history]
    assert _same(_snapshot(first.model), _snapshot(second.model))


@pytest.mark.parametrize("changes, words", [
    ({"strategy": "fine-tuning"}, "Did you mean 'fine-tune'"),
    ({"head": "conv"}, "Unknown head"),
    ({"optimizer": "rmsprop"}, "Unknown optimiser"),
    ({"train_fraction": 0.9, "val_fraction": 0.1}, "Split fractions"),
    ({"epochs": 0}, "Epochs"),
    ({"clip_norm": 0.0}, "clipping"),
    ({"lr_head": 0.0}, "learning rate"),
])
def test_bad_settings_are_refused_with_a_clear_message(changes, words):
    with pytest.raises(InvalidInputError, match=words):
        training.TrainConfig(**changes).check()


def test_fixed_size_backbones_and_missing_backbones_are_refused(tiny_vit, shapes):
    with pytest.raises(InvalidInputError, match="only takes 64 px"):
        training.train(tiny_vit, shapes, training.TrainConfig(image_size=32))
    with pytest.raises(InvalidInputError, match="pretrained backbone"):
        training.train(None, shapes, training.TrainConfig())


def test_cli_trains_prints_epochs_and_writes_an_export(tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["train", "shapes", "--model", TINY, "--limit", "40", "--epochs", "2", "--image-size", "32",
                 "--head", "mlp", "--hidden", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch   1/2" in text and "epoch   2/2" in text and "Test (" in text and "model.safetensors" in text
    model = checkpoints.load(out)
    assert model.categories == ("circle", "square", "triangle", "star")
    assert main(["train", "shapes", "--strategy", "small-cnn", "--limit", "40", "--epochs", "1", "--json",
                 "--out", str(tmp_path / "small")]) == 0
    captured = capsys.readouterr()
    import json

    summary = json.loads(captured.out)
    assert summary["strategy"] == "small-cnn" and len(summary["confusion"]) == 4 and "epoch   1/1" in captured.err
    assert main(["train", "shapes", "--strategy", "fine-tuning", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'fine-tune'" in capsys.readouterr().err
