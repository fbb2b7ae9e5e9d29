"""The CUDA-only paths, on a CPU with the CUDA queries patched: TF32, channels-last, fused AdamW and fp16
generation each take their CUDA branch on a CUDA device and stay off elsewhere.

(The CUDA branch of the mixed-precision choice is test_train_speed.py's test_auto_precision_on_cuda_*.)
"""

import pytest
import torch

from trainer.engine.config import build_config
from trainer.engine.loop import allow_tf32, make_optimizer, use_channels_last

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture
def tf32_off():
    """Both TF32 switches off for the test, restored after it (torch's switch objects defeat monkeypatch)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_allowed_on_cuda(tf32_off):
    allow_tf32(CUDA)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_tf32_stays_off_on_cpu(tf32_off):
    allow_tf32(CPU)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("device, channels_last", [(CUDA, True), (CPU, False)])
def test_unet_is_channels_last_on_cuda_only(tiny_model_dir, device, channels_last):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir, subfolder="unet")
    assert not unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    use_channels_last(unet, device)
    convolutions = [
        m.weight for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
    ]
    assert convolutions
    assert all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in convolutions)


@pytest.mark.parametrize("device, fused", [(CUDA, True), (CPU, True), (torch.device("mps"), False)])
def test_adamw_is_fused_on_cuda_and_cpu(tiny_model_dir, device, fused):
    config = build_config("lora", model=str(tiny_model_dir), learning_rate=1e-3, weight_decay=0.01)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(3))], config, device)
    assert optimizer.defaults["fused"] is fused
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-3, 0.01)


def test_generation_renders_in_fp16_on_cuda_and_float32_on_cpu(monkeypatch):
    from generation.engine import resolve_device_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_dtype("auto", "auto") == ("cuda", "float16")
    assert resolve_device_dtype("cuda", "auto") == ("cuda", "float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device_dtype("auto", "auto") == ("cpu", "float32")
