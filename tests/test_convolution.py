"""core.convolution: the Learn page's arithmetic on plain arrays, checked against PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import convolution
from core.errors import InvalidInputError


# ---------------------------------------------------------------------------------------------
# Convolution


def test_identity_kernel_returns_the_image():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = convolution.convolve(image, "identity")
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(convolution.visible(out, "identity"), image)


@pytest.mark.parametrize("name", list(convolution.KERNELS))
def test_convolve_is_pytorchs_conv2d_per_channel(name):
    image = np.random.default_rng(1).random((12, 15, 3), dtype=np.float32)
    weights = torch.from_numpy(convolution.KERNELS[name].weights.copy())
    planes = torch.from_numpy(image).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    expected = F.conv2d(planes, weights[None, None], padding=1)[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(convolution.convolve(image, name), expected, atol=1e-5)
    worked = convolution.worked(image[..., 0], name, at=(0, 14))  # a corner pixel: the kernel hangs over the border
    assert worked.value == pytest.approx(expected[0, 14, 0], abs=1e-5)
    assert float(convolution.KERNELS[name].weights.sum()) in (pytest.approx(1.0), pytest.approx(0.0))


def test_custom_kernel_and_bad_kernels():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    doubled = convolution.convolve(image, [[0, 0, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(doubled, 2 * image)
    edges = convolution.visible(convolution.convolve(image, "sobel_x"), "sobel_x")
    assert edges.dtype == np.uint8 and edges.max() == 255
    with pytest.raises(InvalidInputError, match="Did you mean 'sobel_x'"):
        convolution.convolve(image, "sobelx")
    with pytest.raises(InvalidInputError, match="3x3"):
        convolution.convolve(image, np.ones((5, 5)))
    with pytest.raises(InvalidInputError, match="finite"):
        convolution.convolve(image, [[0, 0, 0], [0, float("nan"), 0], [0, 0, 0]])


# ---------------------------------------------------------------------------------------------
# Output size


@pytest.mark.parametrize(
    ("n", "kernel", "padding", "stride", "dilation", "expected"),
    [
        (224, 7, 3, 2, 1, 112),  # ResNet's stem
        (224, 3, 1, 1, 1, 224),  # 'same' for odd kernels at stride 1
        (224, 3, 0, 1, 1, 222),
        (5, 3, 0, 2, 1, 2),
        (6, 3, 0, 2, 1, 2),  # the floor drops the last, incomplete step
        (7, 2, 0, 2, 1, 3),
        (32, 3, 2, 1, 2, 32),  # dilation 2: the kernel spans 5 pixels
        (1, 1, 0, 1, 1, 1),
    ],
)
def test_output_size_formula(n, kernel, padding, stride, dilation, expected):
    assert convolution.output_size(n, kernel=kernel, padding=padding, stride=stride, dilation=dilation) == expected
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    assert conv(torch.zeros(1, 1, n, n)).shape[-1] == expected


@pytest.mark.parametrize(
    ("n", "kernel", "padding", "stride"), [(112, 3, 1, 2), (7, 3, 0, 2), (8, 3, 1, 2), (5, 2, 0, 2)]
)
def test_ceil_mode_matches_pytorch_pooling(n, kernel, padding, stride):
    pool = nn.MaxPool2d(kernel, stride=stride, padding=padding, ceil_mode=True)
    expected = pool(torch.zeros(1, 1, n, n)).shape[-1]
    assert convolution.output_size(n, kernel=kernel, padding=padding, stride=stride, ceil_mode=True) == expected


@pytest.mark.parametrize(("n", "kernel", "stride"), [(224, 3, 2), (225, 3, 2), (56, 5, 2), (15, 5, 1), (7, 3, 3)])
def test_same_padding_gives_ceil_n_over_s(n, kernel, stride):
    total = convolution.same_padding(n, kernel=kernel, stride=stride)
    padded = F.pad(torch.zeros(1, 1, n, n), (total // 2, total - total // 2) * 2)
    assert F.conv2d(padded, torch.zeros(1, 1, kernel, kernel), stride=stride).shape[-1] == -(-n // stride)


def test_output_size_refuses_impossible_settings():
    with pytest.raises(InvalidInputError, match="does not fit"):
        convolution.output_size(2, kernel=5, padding=0, stride=1)
    with pytest.raises(InvalidInputError, match="stride"):
        convolution.output_size(10, kernel=3, padding=1, stride=0)
    with pytest.raises(InvalidInputError, match="padding"):
        convolution.output_size(10, kernel=3, padding=-1, stride=1)


# ---------------------------------------------------------------------------------------------
# Pooling


def test_pool_max_and_average():
    image = np.array([[1, 2, 5, 6, 9], [3, 4, 7, 8, 9], [0, 0, 1, 1, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(convolution.pool(image, 2, "max"), [[4, 8]])
    np.testing.assert_array_equal(convolution.pool(image, 2, "average"), [[2, 6]])  # 2.5 and 6.5 round to even
    rgb = np.random.default_rng(2).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    pooled = convolution.pool(rgb, 4, "max")
    assert pooled.shape == (7, 10, 3) and pooled.dtype == np.uint8
    torch_max = F.max_pool2d(torch.from_numpy(rgb).permute(2, 0, 1).float()[None], 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pooled, torch_max)
    with pytest.raises(InvalidInputError, match="Unknown pooling"):
        convolution.pool(rgb, 2, "median")
    with pytest.raises(InvalidInputError, match="window"):
        convolution.pool(rgb, 31, "max")


# ---------------------------------------------------------------------------------------------
# Receptive field


def test_field_outline_draws_a_centred_square():
    picture = np.zeros((100, 120, 3), dtype=np.uint8)
    drawn = convolution.field_outline(picture, 40, jump=8)
    assert drawn.shape == picture.shape and not picture.any()  # the input is not modified
    assert tuple(drawn[30, 45]) == (255, 64, 0)  # the outline's top edge: rows 30 to 69, columns 40 to 79
    assert tuple(drawn[69, 79]) == (255, 64, 0) and tuple(drawn[50, 60]) == (255, 64, 0)  # corner, centre
    assert tuple(drawn[40, 50]) == (0, 0, 0) and tuple(drawn[25, 60]) == (0, 0, 0)  # inside, outside

