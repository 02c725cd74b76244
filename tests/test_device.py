"""microscale.device.resolve_device: the GPU when there is one, else the CPU."""

import pytest
import torch

from microscale.device import resolve_device


def test_none_is_cuda_when_torch_sees_one_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_a_named_device_is_returned_as_a_torch_device(device):
    dev = resolve_device(device)
    assert isinstance(dev, torch.device) and dev == torch.device(device)


@pytest.mark.parametrize("device", ["nonsense", "graphics", 3.5, ["cpu"]])
def test_a_name_that_is_no_torch_device_is_refused(device):
    with pytest.raises(ValueError, match="'device' parameter must name a torch device"):
        resolve_device(device)


def test_cuda_without_a_gpu_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="torch sees no CUDA device.*device='cpu'"):
            resolve_device(device)


@pytest.mark.gpu
def test_cuda_with_a_gpu():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device(None).type == "cuda"
