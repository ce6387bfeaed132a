"""Which device to run on, and in which precision.

bf16 autocast only where the hardware computes bf16 natively: GPUs that
support it, and CPUs with AVX512-BF16 or AMX (train.py only; main.py's
fine-tune stays float32 on every CPU). On CPUs that only emulate bf16 it
measured 15-50x slower than float32.
"""
import contextlib

import torch

from helpers.flags import UsageError

DEVICE_HELP = 'auto (cuda:0 if there is a GPU, else cpu), cpu, cuda or cuda:N'


def pick_device(choice='auto'):
    """A torch.device for 'auto', 'cpu', 'cuda' or 'cuda:N', or a UsageError that says what to use."""
    text = str(choice).strip().lower()
    if text == 'auto':
        text = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"device '{choice}' is not a device PyTorch knows; use {DEVICE_HELP}") from None
    if device.type == 'cpu':
        return torch.device('cpu')
    if device.type != 'cuda':
        raise UsageError(f"device '{choice}': this project runs on the CPU or CUDA GPUs; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {choice}, but PyTorch sees no CUDA GPU here; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if (device.index or 0) >= count:
        raise UsageError(f"--device {choice}, but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    return torch.device('cuda', device.index or 0)


def cpu_has_native_bf16():
    """AVX512-BF16 or AMX. (oneDNN's own bf16 check is also true where bf16 is only emulated.)"""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast(device, cpu_bf16=False):
    """bf16 autocast where the hardware runs it natively, else a no-op context.

    On the CPU only when asked (`cpu_bf16`, train.py): main.py stays float32 there."""
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return torch.autocast('cuda', dtype=torch.bfloat16)
    if device.type == 'cpu' and cpu_bf16 and cpu_has_native_bf16():
        return torch.autocast('cpu', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision(autocast, device):
    """How `autocast` computes on `device`, in words for the log."""
    if isinstance(autocast, torch.autocast):
        return 'bf16 autocast (' + ('the GPU has bf16' if device.type == 'cuda' else
                                    'the CPU has AVX512-BF16 or AMX') + ')'
    if device.type == 'cpu' and not cpu_has_native_bf16():
        return 'float32 (the CPU has no native bf16)'
    return 'float32'
