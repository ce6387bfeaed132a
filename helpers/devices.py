"""Which device to run on, and in which precision.

bf16 autocast only where the hardware computes bf16 natively: GPUs that
support it, and CPUs with AVX512-BF16 or AMX, for main.py's fine-tune and
test pass and for train.py alike (their `--bf16 off` keeps float32). On CPUs
that only emulate bf16 it is many times slower than float32, so there it is
never used (docs/speed.md).
"""
import contextlib

import torch

from helpers.errors import UsageError

DEVICE_HELP = 'auto (cuda:0 if there is a GPU, else cpu), cpu, cuda or cuda:N'


def parse_device(choice):
    """'auto', or a torch.device of type cpu or cuda, for what a person wrote; or a UsageError.
    Whether this machine has that device is `pick_device`'s question."""
    text = str(choice).strip().lower()
    if text == 'auto':
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"device '{choice}' is not a device PyTorch knows; use {DEVICE_HELP}") from None
    if device.type not in ('cpu', 'cuda'):
        raise UsageError(f"device '{choice}': this project runs on the CPU or CUDA GPUs; use {DEVICE_HELP}")
    return device


def pick_device(choice='auto'):
    """A torch.device for 'auto', 'cpu', 'cuda' or 'cuda:N', or a UsageError that says what to use."""
    device = parse_device(choice)
    if device == 'auto':
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.type == 'cpu':
        return torch.device('cpu')
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


def autocast(device, bf16=True):
    """bf16 autocast where the hardware runs it natively, else (or with `bf16` False) a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return torch.autocast('cuda', dtype=torch.bfloat16)
    if device.type == 'cpu' and cpu_has_native_bf16():
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
