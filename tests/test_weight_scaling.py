"""Scaling for Adam (helpers/weight_scaling.py) keeps the function in exact powers of two and makes Adam's steps
small next to the weights; the ship tool scales what it ships, once."""
import copy
import functools
import os
import re

import pytest
import torch
import torch.nn as nn

from helpers import paths
from helpers.checkpoints import MODELS, SUMS, load_either, sha256
from helpers.errors import Mistake
from helpers.weight_scaling import (compact, fold_batchnorm, largest_safe_batch, looks_scaled,
                                    scale_for_adam, unscale)
from scripts import in_process, one_line_error
from vgg16_full import VGG, cfg, make_layers, vgg16

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def with_statistics(model):
    """`model` with BatchNorm statistics from a real batch, as after training."""
    torch.manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, NORMS)]
    for m in norms:
        nn.init.uniform_(m.weight, 0.5, 1.5)
        nn.init.uniform_(m.bias, -0.2, 0.2)
        m.momentum = 1.0  # the batch's own statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 32, 32))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


@functools.lru_cache(maxsize=None)
def _trained(name):
    torch.manual_seed(0)  # the same weights whichever test asks first
    return with_statistics(MODELS[name]())


def trained_looking(name):
    return copy.deepcopy(_trained(name))


def same_function(a, b, rtol=1e-4):
    with torch.no_grad():
        expected = b(X)
        return torch.allclose(a(X), expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_scaling_keeps_the_function_and_the_keys_in_exact_powers_of_two(name):
    model = trained_looking(name)
    scaled = scale_for_adam(copy.deepcopy(model))
    assert same_function(scaled, model) and looks_scaled(scaled)
    assert scaled.state_dict().keys() == model.state_dict().keys()
    for key, before in model.state_dict().items():  # each convolution's weight: an exact multiple 2^k
        if key.endswith('weight') and before.dim() == 4:
            ratio = (scaled.state_dict()[key] / before)[before != 0]
            assert (ratio == ratio[0]).all() and ratio[0] >= 2 and ratio[0].log2() == ratio[0].log2().round(), key


@pytest.mark.parametrize('name, dead', [('resnet50', False), ('vgg16', False), ('vgg16', True)])
def test_unscaling_gives_the_same_function_in_weights_of_a_trained_size(name, dead):
    model = trained_looking(name)
    if name == 'vgg16':  # trained weights are not at their initial size, biases not zero
        with torch.no_grad():
            for i, m in enumerate(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
                m.weight.mul_(2 ** (1.5 if i % 2 else -1.5))
                m.bias.uniform_(-0.1, 0.1)
            model.classifier[2].running_var[0] = 0 if dead else 1  # a head channel that never varies: kept
    back = unscale(scale_for_adam(copy.deepcopy(model)))
    assert same_function(back, model) and not looks_scaled(back)
    if name == 'resnet50':  # fixed factors: the trained weights exactly
        for (key, p), q in zip(back.named_parameters(), model.parameters()):
            assert torch.equal(p, q), key
    else:
        head = back.classifier[2].running_var
        assert (head > 0).all() and (dead or 0.25 <= head.median().item() <= 4)  # back near 1
        assert same_function(scale_for_adam(back), model)  # and scaled again, as train.py saves it


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_adam_moves_a_scaled_model_much_less(name):
    drift = {}
    for scaled in (False, True):
        model = scale_for_adam(trained_looking(name)) if scaled else trained_looking(name)
        with torch.no_grad():
            before = model.eval()(X)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        torch.manual_seed(1)
        for m in (m for m in model.train().modules() if isinstance(m, NORMS)):
            m.momentum = 0.0  # statistics follow the data either way: measure the weights' drift
        for _ in range(6):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
            optimizer.step()
        with torch.no_grad():
            drift[scaled] = (model.eval()(X) - before).norm() / before.norm()
    assert drift[True] < 0.3 * drift[False], drift


def test_compact_halves_the_weights_keeps_the_statistics_and_the_function():
    model = scale_for_adam(trained_looking('resnet50'))
    state = compact(model.state_dict())
    assert state['layer2.0.layer.0.0.weight'].dtype == torch.float16
    assert all(v.dtype == torch.float32 for k, v in state.items() if 'running_' in k)
    again = MODELS['resnet50']()
    again.load_state_dict(state)
    assert same_function(again.eval(), model, rtol=0.05)


def test_folding_batchnorm_gives_the_assignments_vgg16_computing_the_same():
    model = with_statistics(VGG(make_layers(cfg['D'], batch_norm=True)))
    folded = fold_batchnorm(model)
    assert folded.state_dict().keys() == vgg16().state_dict().keys()  # the BN-free assignment model
    assert same_function(folded.eval(), model)
    assert same_function(scale_for_adam(folded), model, rtol=1e-3)  # and scaled for Adam afterwards


def test_scaling_twice_or_scaling_another_network_is_refused():
    model = scale_for_adam(trained_looking('vgg16'))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(Mistake, match='scaled already'):
        scale_for_adam(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    with pytest.raises(Mistake, match='scaled already'):
        scale_for_adam(scale_for_adam(trained_looking('resnet50')))
    with pytest.raises(Mistake, match='Sequential is not one of the assignment models'):
        scale_for_adam(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.slow
def test_the_ship_tool_scales_a_checkpoint_once_and_lists_its_sha256(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, 'PROJECT', str(tmp_path))  # a copy of the project, not this one
    sums, other = tmp_path / 'checkpoints' / SUMS, '0' * 64 + '  resnet50_cifar10.ckpt'
    sums.parent.mkdir()
    sums.write_text(other + '\n')
    raw, scaled, shipped = (str(tmp_path / f) for f in ('raw.ckpt', 'scaled.ckpt', 'checkpoints/vgg16_cifar10.ckpt'))
    torch.save(trained_looking('vgg16').state_dict(), raw)
    torch.save(scale_for_adam(trained_looking('vgg16')).state_dict(), scaled)
    for source in (raw, scaled):  # a raw checkpoint is scaled; a scaled one is not scaled twice
        assert 'now the shipped VGG16 checkpoint' in in_process('-m tools.ship_checkpoint', source).stdout
        assert sums.read_text().splitlines() == [other, f'{sha256(shipped)}  vgg16_cifar10.ckpt']
        name, loaded = load_either(shipped, '')  # which checks it against that line
        assert name == 'vgg16' and same_function(loaded.eval(), _trained('vgg16'), rtol=0.05)
        assert looks_scaled(loaded) and largest_safe_batch(loaded) >= 100


def test_the_ship_tool_answers_help_and_mistakes_in_one_line(tmp_path):
    missing, other = str(tmp_path / 'nope.ckpt'), str(tmp_path / 'other.ckpt')
    torch.save({'w': torch.zeros(3)}, other)
    help_text = ' '.join(in_process('-m tools.ship_checkpoint', '--help').stdout.split())
    assert help_text.startswith('usage: python -m tools.ship_checkpoint') and all(rule in help_text for rule in (
        "main.py's default run over seeds 0, 1 and 2", 'by at least 0.5 point', 'within 1 point of that mean'))
    for args, rc, message in (([], 2, 'error: the following arguments are required: TRAINED.ckpt'),
                              (['--force', other], 2, 'error: unrecognized arguments: --force'),
                              ([missing], 1, f'checkpoint not found: {missing}'),
                              ([other], 1, 'neither a VGG16 nor a ResNet50_layer4')):
        one_line_error(in_process('-m tools.ship_checkpoint', *args), re.escape(message), rc)
    assert os.listdir(tmp_path) == ['other.ckpt']  # nothing written
