"""bf16 autocast only where the hardware computes bf16 natively; float32 with --plain and --bf16 off."""
import contextlib

import pytest
import torch

from conftest import make_image_folder
from helpers import devices, fast_path
from helpers.checkpoints import load_checkpoint
from helpers.model_table import MODELS, PRETRAINED
from scripts import ROOT, main

CPU = torch.device('cpu')


def pretend_cpu(monkeypatch, avx512_bf16, amx=False):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)


@pytest.mark.parametrize('avx512_bf16, amx, native', [(False, False, False), (True, False, True), (False, True, True)])
def test_cpu_autocast_is_bf16_only_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx, native):
    pretend_cpu(monkeypatch, avx512_bf16, amx)
    chosen = devices.autocast(CPU)
    assert isinstance(chosen, torch.autocast) == native
    if native:
        assert chosen.fast_dtype == torch.bfloat16
        assert devices.precision(chosen, CPU) == 'bf16 autocast (the CPU has AVX512-BF16 or AMX)'
    else:
        assert devices.precision(chosen, CPU) == 'float32 (the CPU has no native bf16)'
    off = devices.autocast(CPU, bf16=False)  # --bf16 off
    assert isinstance(off, contextlib.nullcontext)


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('tiny'), train_per_class=1, test_per_class=2)


@pytest.mark.parametrize('native, flags, says', [
    (False, [], 'on cpu, float32 (the CPU has no native bf16);'),
    (True, [], 'on cpu, bf16 autocast (the CPU has AVX512-BF16 or AMX);'),
    (True, ['--bf16', 'off'], 'on cpu, float32;'),
    (True, ['--plain'], 'on cpu, float32;'),
])
def test_main_runs_bf16_only_on_the_fast_path_of_a_cpu_that_has_it(monkeypatch, tiny_folder, tmp_path, native,
                                                                   flags, says):
    pretend_cpu(monkeypatch, native)
    used = []
    real = torch.autocast.__enter__
    monkeypatch.setattr(torch.autocast, '__enter__', lambda self: used.append(self.fast_dtype) or real(self))
    r = main('--model', 'vgg16', '--data', tiny_folder, '--checkpoint', f'{ROOT}/{PRETRAINED["vgg16"]}',
             '--eval-only', '--device', 'cpu', *flags)
    assert r.returncode == 0, r.stderr
    assert says in r.stdout.splitlines()[0]
    assert (torch.bfloat16 in used) == ('bf16 autocast' in says)  # the test pass really ran in it, or not at all


def test_the_scaled_vgg16_head_batchnorm_stays_float32_under_bf16():
    # the shipped VGG16's head BatchNorm1d sees values near 2^60; its statistics are taken in float32
    model = MODELS['vgg16']()
    load_checkpoint(model, f'{ROOT}/{PRETRAINED["vgg16"]}')
    fast = fast_path.prepare(model, CPU, bf16=True)
    head = fast.classifier[2]
    assert isinstance(head, fast_path.Float32BatchNorm1d)
    seen = {}
    head.register_forward_hook(lambda m, inputs, output: seen.update(input=inputs[0].dtype, output=output.dtype))
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    fast.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = fast(x)
    assert seen['output'] == torch.float32
    assert torch.isfinite(logits).all() and torch.isfinite(head.running_var).all()
    assert head.running_var.max() > 2.0 ** 100  # the scaled statistics, not an overflowed or zeroed layer
