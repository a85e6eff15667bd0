"""Feature maps, first-layer filters and architecture tables: shapes, ranges, ordering, totals, no leftover hooks."""

import pickle
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from core import features, hooks, models
from core.errors import InvalidInputError, LayerNotFoundError
from core.models import LoadedModel
from tests.conftest import TINY, sample


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    return models.load("vit_b_16", device="cpu", pretrained=False)


def _activations(model: LoadedModel, image, layer: str) -> torch.Tensor:
    """The layer's (C, h, w) output, computed independently of features.feature_maps."""
    from core import preprocessing

    with model.lock, hooks.capture(model.module, [layer]) as captured, torch.inference_mode():
        model.module(preprocessing.to_tensor(image, model.spec))
    output = captured[layer]
    return (model.spec.reshape(output) if output.ndim == 3 else output)[0]


def _assert_each_map_spans_0_to_1(maps: np.ndarray) -> None:
    assert maps.dtype == np.float32 and np.isfinite(maps).all()
    for channel in maps:
        assert channel.min() == 0.0 and channel.max() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# feature_maps


def test_feature_maps_are_the_strongest_channels_normalised(lite0, chelsea):
    result = features.feature_maps(lite0, chelsea, layer="bn2", limit=16)
    activations = _activations(lite0, chelsea, "bn2")
    channels, height, width = activations.shape
    assert result.layer == "bn2" and result.output_shape == (1, channels, height, width)
    assert result.map_shape == (channels, height, width) == (1280, 7, 11)  # chelsea is 451x300: aspect kept
    assert result.maps.shape == (16, height, width) and len(result.channels) == len(set(result.channels)) == 16
    _assert_each_map_spans_0_to_1(result.maps)
    means = activations.mean(dim=(1, 2))
    assert list(result.channels) == means.argsort(descending=True)[:16].tolist()
    assert np.all(np.diff(result.means) <= 0) and result.means[0] == pytest.approx(float(means.max()))
    assert result.means[-1] >= float(means.sort(descending=True).values[16])
    first = activations[result.channels[0]]
    expected = (first - first.min()) / (first.max() - first.min())
    np.testing.assert_allclose(result.maps[0], expected.numpy(), atol=1e-6)
    assert result.grid.dtype == np.uint8 and result.grid.ndim == 3 and result.grid.shape[2] == 3
    assert hooks.count(lite0.module) == 0


def test_default_layer_and_a_limit_above_the_channel_count(tiny, chelsea):
    result = features.feature_maps(tiny, chelsea, limit=64)
    assert result.layer == tiny.spec.cam_layer == "3"
    assert result.map_shape[0] == 12 and sorted(result.channels) == list(range(12))
    assert result.maps.shape == (12, *result.map_shape[1:]) and result.means.shape == (12,)


def test_grid_is_a_mosaic_with_gaps(tiny, chelsea):
    result = features.feature_maps(tiny, chelsea, layer="2", limit=12)  # 12 maps of 16x24: 4 columns, 3 rows
    _, height, width = result.map_shape
    scale = -(-48 // max(height, width))
    tile_h, tile_w = height * scale, width * scale
    assert result.grid.shape == (3 * tile_h + 2 * 2, 4 * tile_w + 3 * 2, 3)
    assert (result.grid[:, tile_w : tile_w + 2] == 255).all() and (result.grid[tile_h : tile_h + 2] == 255).all()
    top_left = result.grid[:tile_h:scale, :tile_w:scale, 0]  # nearest-neighbour enlargement of map 0
    np.testing.assert_array_equal(top_left, np.rint(result.maps[0] * 255).astype(np.uint8))


def test_token_models_are_reshaped_to_maps(vit, chelsea):
    result = features.feature_maps(vit, chelsea, limit=8)
    assert result.layer == vit.spec.cam_layer
    assert result.output_shape == (1, 197, 768) and result.map_shape == (768, 14, 14)
    assert result.maps.shape == (8, 14, 14)
    _assert_each_map_spans_0_to_1(result.maps)
    means = _activations(vit, chelsea, vit.spec.cam_layer).mean(dim=(1, 2))
    assert list(result.channels) == means.argsort(descending=True)[:8].tolist()
    assert hooks.count(vit.module) == 0


def test_channels_last_token_model():
    swin = models.load("swin_t", device="cpu", pretrained=False)
    result = features.feature_maps(swin, sample("coffee"), layer="features.7", limit=4)
    assert result.output_shape == (1, 7, 7, 768) and result.map_shape == (768, 7, 7)


@pytest.mark.parametrize(
    "fixture, layer, message",
    [
        ("tiny", "nope", "No layer 'nope'"),
        ("tiny", "7", "not a spatial map"),  # the Linear head: (1, 10)
        ("tiny", "5", "not a spatial map"),  # global pooling: 1x1
        ("vit", "heads.head", "not a spatial map"),
        ("vit", "encoder.layers.encoder_layer_0.self_attention", "returns a tuple"),
    ],
)
def test_layers_without_a_spatial_map_are_refused(request, chelsea, fixture, layer, message):
    model = request.getfixturevalue(fixture)
    with pytest.raises(LayerNotFoundError, match=message):
        features.feature_maps(model, chelsea, layer=layer)
    assert hooks.count(model.module) == 0


def test_limit_below_one_is_refused(tiny, chelsea):
    with pytest.raises(InvalidInputError, match="at least one channel"):
        features.feature_maps(tiny, chelsea, limit=0)


def test_feature_maps_wait_for_the_models_lock(tiny, chelsea):
    results = []
    with tiny.lock:
        worker = threading.Thread(target=lambda: results.append(features.feature_maps(tiny, chelsea)))
        worker.start()
        time.sleep(0.2)
        assert not results, "feature_maps ran a forward pass without the model's lock"
    worker.join(timeout=30)
    assert len(results) == 1 and hooks.count(tiny.module) == 0


def test_results_pickle_for_the_dashboard_cache(tiny, chelsea):
    results = features.feature_maps(tiny, chelsea), features.first_conv_filters(tiny), features.architecture(tiny)
    for result in results:
        copy = pickle.loads(pickle.dumps(result))
        assert type(copy) is type(result)


# ---------------------------------------------------------------------------------------------
# first_conv_filters


@pytest.mark.parametrize(
    "fixture, layer, count, kernel",
    [("tiny", "0", 8, (3, 3)), ("lite0", "conv_stem", 32, (3, 3)), ("vit", "conv_proj", 768, (16, 16))],
)
def test_first_conv_filters_are_rgb_tiles(request, fixture, layer, count, kernel):
    model = request.getfixturevalue(fixture)
    result = features.first_conv_filters(model)
    assert (result.layer, result.count, result.kernel_size) == (layer, count, kernel)
    assert result.tiles.shape == (count, *kernel, 3) and result.tiles.dtype == np.float32
    assert result.tiles.min(axis=(1, 2, 3)).max() == 0.0 and np.allclose(result.tiles.max(axis=(1, 2, 3)), 1.0)
    weight = model.module.get_submodule(layer).weight[0]  # (3, kh, kw): tile 0's red plane is channel 0
    red = (weight[0] - weight.min()) / (weight.max() - weight.min())
    np.testing.assert_allclose(result.tiles[0, :, :, 0], red.numpy(), atol=1e-6)
    assert result.grid.dtype == np.uint8 and result.grid.ndim == 3 and result.grid.shape[2] == 3


def test_a_network_without_an_rgb_convolution_is_refused(tiny):
    flat = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    model = LoadedModel(spec=tiny.spec, module=flat, device=torch.device("cpu"), pretrained=False, params=130)
    with pytest.raises(LayerNotFoundError, match="no Conv2d"):
        features.first_conv_filters(model)


# ---------------------------------------------------------------------------------------------
# architecture


def _total(model: LoadedModel) -> int:
    return sum(p.numel() for p in model.module.parameters())


def test_architecture_of_the_tiny_cnn(tiny):
    result = features.architecture(tiny)
    assert result.name == TINY and result.input_shape == (1, 3, 64, 64)
    assert [row.name for row in result.rows] == ["", *map(str, range(8))]
    assert result.rows[0].type == "Sequential" and result.rows[0].output_shape == (1, 10)
    assert result.rows[1].params == 8 * 3 * 3 * 3 + 8 and result.rows[1].output_shape == (1, 8, 32, 32)
    assert result.total_params == _total(tiny) == sum(row.params for row in result.rows) == 1254
    assert result.trainable_params == 0 and all(row.trainable == 0 for row in result.rows)  # loaded models are frozen
    assert [stage.name for stage in result.stages] == ["1", "3", "7"]  # stages found at load (core.layers), the head
    assert [stage.modules for stage in result.stages] == [("0",), ("2", "3"), ("7",)]  # modules that own parameters
    assert sum(stage.params for stage in result.stages) == result.total_params
    assert hooks.count(tiny.module) == 0


def test_architecture_of_lite0_shows_the_stages_fine_tuning_unfreezes(lite0, chelsea):
    result = features.architecture(lite0, chelsea)
    assert result.total_params == _total(lite0) == sum(row.params for row in result.rows)
    assert result.trainable_params == 0
    assert result.input_shape == (1, 3, 224, 337)
    assert [stage.name for stage in result.stages] == [*lite0.spec.stages, "classifier"]
    assert result.stages[0].modules == ("conv_stem", "bn1", "blocks.0") and result.stages[-2].modules == ("conv_head", "bn2")
    assert sum(stage.params for stage in result.stages) == result.total_params
    shapes = {row.name: row.output_shape for row in result.rows}
    assert shapes["bn2"] == (1, 1280, 7, 11) and shapes["classifier"] == (1, 1000)
    assert hooks.count(lite0.module) == 0


def test_architecture_of_vit_counts_parameters_owned_by_the_root_and_containers(vit):
    result = features.architecture(vit)
    assert result.total_params == _total(vit) == 86_567_656
    assert sum(stage.params for stage in result.stages) == result.total_params
    names = [stage.name for stage in result.stages]
    assert names == [*vit.spec.stages, "heads.head"]
    first, last = result.stages[0].modules, result.stages[-2].modules
    assert first == ("class_token", "conv_proj", "encoder.pos_embedding",
                     *(f"encoder.layers.encoder_layer_{i}" for i in range(3)))
    assert last == (*(f"encoder.layers.encoder_layer_{i}" for i in (9, 10, 11)), "encoder.ln")
    root = result.rows[0]
    assert root.name == "" and root.params == 768 and root.output_shape == (1, 1000)


def test_trainable_counts_follow_requires_grad():
    model = models.load(TINY, device="cpu")
    model.module.get_submodule("7").requires_grad_(True)
    result = features.architecture(model)
    assert result.trainable_params == 12 * 10 + 10 and result.total_params == 1254
    assert [row.trainable for row in result.rows if row.trainable] == [130]


def test_shared_parameters_are_counted_once(tiny):
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    module = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), first, second).eval()
    model = LoadedModel(spec=tiny.spec, module=module, device=torch.device("cpu"), pretrained=False, params=0)
    result = features.architecture(model)
    assert result.total_params == _total(model) == 16 + 20 + 4  # conv, first Linear, the second's bias
    assert sum(stage.params for stage in result.stages) == result.total_params


# ---------------------------------------------------------------------------------------------
# layers / cam_layers (used by the Explain page) still work


def test_layers_and_cam_layers(tiny, chelsea):
    table = features.layers(tiny, chelsea)
    assert [info.name for info in table] == [str(i) for i in range(8)]
    assert table[0].output_shape == (1, 8, 32, 48) and table[0].cam_ready  # 451x300 -> 64x96 input
    assert not table[5].cam_ready and not table[7].cam_ready and table[7].params == 130
    assert features.cam_layers(tiny) == ["0", "1", "2", "3", "4"]
    assert hooks.count(tiny.module) == 0


def test_capture_keeps_the_true_output_despite_later_inplace_ops():
    from core import hooks, models, preprocessing
    from tests.conftest import sample

    model = models.load("resnet18", device="cpu", pretrained=False)
    tensor = preprocessing.to_tensor(sample("chelsea"), model.spec)
    with hooks.capture(model.module, ["bn1", "layer1.0.bn2"]) as captured, torch.inference_mode():
        model.module(tensor)
    # both are followed by an in-place ReLU (and a residual add): a shared view would read >= 0
    assert captured["bn1"].min() < 0 and captured["layer1.0.bn2"].min() < 0
