"""bf16 autocast only where the hardware computes bf16 natively, float16 never; float32 with --plain and --bf16 off."""
import os

import pytest
import torch

from conftest import make_image_folder
from helpers import devices, fast_path
from helpers.checkpoints import MODELS, PRETRAINED, load
from scripts import ROOT, main

CPU = torch.device('cpu')


def dtype(autocast):
    return autocast.fast_dtype if isinstance(autocast, torch.autocast) else None  # None: float32


def pretend_cpu(monkeypatch, avx512_bf16, amx=False):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)


@pytest.mark.parametrize('avx512_bf16, amx, native', [(False, False, False), (True, False, True), (False, True, True)])
def test_a_cpu_gets_bf16_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    pretend_cpu(monkeypatch, avx512_bf16, amx)
    chosen = devices.autocast(CPU)
    assert dtype(chosen) == (torch.bfloat16 if native else None)
    assert devices.precision(chosen, CPU) == ('bf16 autocast (the CPU has AVX512-BF16 or AMX)' if native else
                                              'float32 (the CPU has no native bf16)')
    assert dtype(devices.autocast(CPU, bf16=False)) is None  # --bf16 off


@pytest.mark.parametrize('capability, native', [((6, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_a_gpu_gets_bf16_only_from_compute_capability_8(monkeypatch, capability, native):
    # P100 6.0, T4 7.5 (Colab, Kaggle): torch.cuda.is_bf16_supported() is true there, by emulation
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # autocast checks these
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    gpu = torch.device('cuda', 0)
    chosen = devices.autocast(gpu)
    assert dtype(chosen) == (torch.bfloat16 if native else None)  # float16 never
    version = f'{capability[0]}.{capability[1]}'
    assert devices.precision(chosen, gpu) == (
        f'bf16 autocast (the GPU has native bf16: compute capability {version})' if native else
        f'float32 (the GPU has no native bf16: compute capability {version}, below 8.0)')


@pytest.mark.slow
@pytest.mark.parametrize('native, flags, says', [
    (False, [], 'on cpu, float32 (the CPU has no native bf16);'),
    (True, [], 'on cpu, bf16 autocast (the CPU has AVX512-BF16 or AMX);'),
    (True, ['--bf16', 'off'], 'on cpu, float32;'),
    (True, ['--plain'], 'on cpu, float32;'),
])
def test_main_tests_in_bf16_only_on_the_fast_path_of_a_cpu_that_has_it(monkeypatch, tmp_path, native, flags, says):
    pretend_cpu(monkeypatch, native)
    used, real = [], torch.autocast.__enter__
    monkeypatch.setattr(torch.autocast, '__enter__', lambda self: used.append(self.fast_dtype) or real(self))
    folder = make_image_folder(tmp_path, train_per_class=1, test_per_class=2)
    r = main('--model', 'vgg16', '--data', folder, '--eval-only', '--device', 'cpu', *flags)
    assert r.returncode == 0 and says in r.stdout.splitlines()[0], r.stderr  # the log line says which, and why
    assert set(used) == ({torch.bfloat16} if 'bf16 autocast' in says else set())  # the test pass ran in it


def test_the_scaled_vgg16_head_batchnorm_stays_float32_under_bf16():
    # the shipped VGG16's head BatchNorm1d sees values near 2^60 and squares them: its statistics stay float32
    load(model := MODELS['vgg16'](), os.path.join(ROOT, PRETRAINED['vgg16']))
    fast = fast_path.prepare(model, CPU, bf16=True).train()
    head, seen = fast.classifier[2], []
    head.register_forward_hook(lambda m, inputs, output: seen.append(output.dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = fast(torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert seen == [torch.float32]
    assert torch.isfinite(logits).all() and torch.isfinite(head.running_var).all()
    assert head.running_var.max() > 2.0 ** 100  # the scaled statistics, not an overflowed or zeroed layer
