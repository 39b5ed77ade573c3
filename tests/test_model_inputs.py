"""ibsr/model/inputs.py: the one input scaling, bit for bit what every caller computed before."""

import numpy as np
import pytest
import torch

from ibsr.model.inputs import scale_pixels

PIXELS = np.arange(256, dtype=np.uint8).reshape(16, 16)


def test_numpy_pixels_scale_as_the_query_loader_did():
    got = scale_pixels(PIXELS)
    want = PIXELS.astype(np.float32) / 127.5 - 1.0
    assert got.dtype == np.float32 and got.shape == PIXELS.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got.flat[0] == -1.0 and got.flat[255] == 1.0 and np.all(np.diff(got.ravel()) > 0)


def test_torch_pixels_scale_in_place_as_the_tensor_paths_did():
    pixels = torch.from_numpy(PIXELS)
    got = scale_pixels(pixels)
    want = pixels.float().div_(127.5).sub_(1.0)
    assert got.dtype == torch.float32 and torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert torch.equal(pixels, torch.from_numpy(PIXELS))  # a uint8 input is left as it was
    as_float = pixels.to(torch.float32)
    assert scale_pixels(as_float) is as_float and torch.equal(as_float, want)  # float32: scaled in place


def test_numpy_and_torch_give_the_same_numbers_on_the_cpu():
    assert np.array_equal(scale_pixels(PIXELS).view(np.uint32), scale_pixels(torch.from_numpy(PIXELS)).numpy().view(np.uint32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_tensor_scales_where_it_lies():
    pixels = torch.from_numpy(PIXELS).cuda()
    got = scale_pixels(pixels)
    assert got.is_cuda and torch.equal(got, pixels.float().div_(127.5).sub_(1.0))
