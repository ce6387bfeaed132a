"""What makes main.py's fine-tune fast without changing what it computes.

Measured on this project's machines (numbers in the README):
  * data: every image is decoded once and kept as one uint8 tensor on the
    device; crop, flip and normalize run on whole batches there, instead of
    PIL transforms image by image in the main process;
  * channels_last: oneDNN and cuDNN pick faster convolutions for it (ResNet's
    1x1 convolutions most of all);
  * bfloat16 autocast on GPUs that have it. Not on CPUs without native bf16
    (AVX2 only): there it measured 15-50x slower, so the CPU stays float32.
"""
import contextlib

import torch

import cifar10
from cli import UsageError


def pick_device(choice):
    """torch.device for --device auto|cpu|cuda."""
    if choice == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda, but PyTorch sees no CUDA GPU here; use --device cpu (or auto)')
    if choice == 'cpu' or not torch.cuda.is_available():
        return torch.device('cpu')
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    return torch.device('cuda:0')


def autocast(device):
    """bf16 autocast where the hardware runs it natively, else nothing."""
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(model, device):
    return model.to(device, memory_format=torch.channels_last)


def loaders(data_dir, batch_size, device, seed=None):
    """Train and test loaders over decoded tensors, on `device`."""
    train = cifar10.TensorLoader(*cifar10.decode(data_dir, 'train'), batch_size, train=True,
                                 device=device, channels_last=True, seed=seed)
    test = cifar10.TensorLoader(*cifar10.decode(data_dir, 'test'), batch_size, train=False,
                                device=device, channels_last=True)
    return train, test
