"""Which device to run on, and in which precision: bf16 autocast only where the hardware computes it natively
(emulated it is many times slower), float16 never (the shipped weights exceed its range); docs/platforms.md."""
import argparse
import contextlib
import copy
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers.errors import Mistake

DEVICE_HELP = 'auto (a CUDA GPU, else the Apple GPU, else the CPU), cpu, cuda, cuda:N or mps'
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs whose tensor cores compute bf16


def device_text(choice):
    """--device's type: 'auto' or a cpu, cuda or mps device PyTorch knows (whether it is here: pick_device)."""
    text = str(choice).strip().lower()
    try:
        kind = text if text == 'auto' else torch.device(text).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ('auto', 'cpu', 'cuda', 'mps'):
        what = 'is not a device PyTorch knows' if kind is None else 'is not the CPU, a CUDA GPU or the Apple GPU'
        raise argparse.ArgumentTypeError(f"device '{choice}' {what}; use {DEVICE_HELP}")
    return text


def pick_device(choice='auto', said=None):
    """The torch.device for a --device choice (as device_text checks it), or a Mistake when it is not here that
    names the choice as the person gave it (`said`: the flag, or main.py's line)."""
    device, said = device_text(choice), said or f'--device {choice}'
    use = "'auto' or 'cpu'" if said.startswith('device =') else '--device cpu (or auto)'
    if device == 'auto':
        mps = torch.backends.mps.is_available()
        device = 'cuda' if torch.cuda.is_available() else 'mps' if mps else 'cpu'
    device = torch.device(device)
    if device.type == 'cpu':
        return torch.device('cpu')
    if device.type == 'mps':
        if not torch.backends.mps.is_available():
            raise Mistake(f"{said}: PyTorch sees no Apple GPU (MPS) here; use {use}")
        if not step_agrees(torch.device('mps')):
            print('note: one training step on the Apple GPU (MPS) disagrees with the same step on the CPU in this '
                  'PyTorch; running on the CPU (a newer PyTorch may fix it)', file=sys.stderr, flush=True)
            return torch.device('cpu')
        return torch.device('mps')
    if not torch.cuda.is_available():
        raise Mistake(f"{said}: PyTorch sees no CUDA GPU here; use {use}")
    count = torch.cuda.device_count()
    if (device.index or 0) >= count:
        raise Mistake(f"{said}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    return torch.device('cuda', device.index or 0)


def _gradients(net, x, y, device):
    """The gradients of one training step of `net` on `device`, brought back to the CPU."""
    net = copy.deepcopy(net).to(device)
    F.cross_entropy(net(x.to(device)), y.to(device)).backward()
    return [p.grad.detach().cpu() for p in net.parameters()]


def step_agrees(device, tolerance=1e-3):
    """True when one training step on `device` gives the CPU's gradients (MPS computed wrong ones in some releases):
    a small network with 3x3, 1x1 and strided convolutions and BatchNorm, on a sliced batch, as main.py runs it."""
    with torch.random.fork_rng(devices=[]):  # the run's own random numbers stay as they were
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        x = torch.randn(16, 3, 12, 12)[::2]
        y = torch.randint(0, 10, (8,))
    try:
        here, there = _gradients(net, x, y, torch.device('cpu')), _gradients(net, x, y, device)
    except RuntimeError:  # an operation the device does not have in this PyTorch
        return False
    return all(torch.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in zip(here, there))


def native_bf16(device):
    """bf16 computed by the hardware: CPUs with AVX512-BF16 or AMX (oneDNN's own check counts emulation), NVIDIA
    GPUs from compute capability 8.0 (torch.cuda.is_bf16_supported() counts emulation)."""
    if device.type == 'cpu':
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return device.type == 'cuda' and torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def autocast(device, bf16=True):
    """bf16 autocast where the hardware runs it natively, else (or with `bf16` False) a no-op context."""
    native = bf16 and native_bf16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if native else contextlib.nullcontext()


def precision(autocast, device):
    """How `autocast` computes on `device`, and why, in words for the log."""
    gpu = 'compute capability {}.{}'.format(*torch.cuda.get_device_capability(device)) if device.type == 'cuda' else ''
    if isinstance(autocast, torch.autocast):
        return f'bf16 autocast (the GPU has native bf16: {gpu})' if gpu else \
            'bf16 autocast (the CPU has AVX512-BF16 or AMX)'
    if device.type == 'mps':
        return 'float32 (the Apple GPU)'
    if not native_bf16(device):
        return f'float32 (the GPU has no native bf16: {gpu}, below 8.0)' if gpu else \
            'float32 (the CPU has no native bf16)'
    return 'float32'
