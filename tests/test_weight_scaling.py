"""Folding BatchNorm and scale_for_adam keep the function, and scaling makes Adam's steps small next to the weights."""
import copy
import os
import re

import pytest
import torch
import torch.nn as nn

from helpers.model_table import MODELS
from scripts import ROOT, in_process, one_line_error, run
from helpers.weight_scaling import (ScalingError, compact, fold_batchnorm, largest_safe_batch, looks_scaled,
                                    scale_for_adam, unscale)
from vgg16_full import VGG, cfg, make_layers, vgg16


def trained_looking(name, seed=0):
    """A model with BatchNorm statistics from real forward passes, as after training."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None  # cumulative average
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = 0.1
    return model.eval()


@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_rescaling_keeps_the_function(name):
    model = trained_looking(name)
    scaled = scale_for_adam(copy.deepcopy(model))
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scaled(x), model(x), rtol=1e-4, atol=1e-5)
    assert scaled.state_dict().keys() == model.state_dict().keys()
    # the weights really are larger
    first_conv = next(m for m in scaled.modules() if isinstance(m, nn.Conv2d))
    original = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.abs().mean() >= 8 * original.weight.abs().mean()


@pytest.mark.parametrize('name, dead', [('resnet50', False), ('vgg16', False), ('vgg16', True)])
def test_unscaling_gives_the_same_function_in_weights_of_a_trained_size(name, dead):
    model = trained_looking(name)
    if name == 'vgg16':  # trained weights are not at their initial size, biases not zero
        with torch.no_grad():
            for i, m in enumerate(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
                m.weight.mul_(2 ** (1.5 if i % 2 else -1.5))
                m.bias.uniform_(-0.1, 0.1)
            if dead:  # a head channel that never varies: its variance must not be lost to eps
                model.classifier[2].running_var[0] = 0
    back = unscale(scale_for_adam(copy.deepcopy(model)))
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), rtol=1e-4, atol=1e-5)
        assert torch.isfinite(back(x)).all()
    assert not looks_scaled(back)
    if name == 'resnet50':  # fixed factors: the trained weights exactly
        for (key, p), q in zip(back.named_parameters(), model.parameters()):
            assert torch.equal(p, q), key
    else:
        head = back.classifier[2]
        assert (head.running_var > 0).all()
        if not dead:  # the head's variance back near 1
            assert 0.25 <= head.running_var.median().item() <= 4
        again = scale_for_adam(copy.deepcopy(back))  # what train.py does before saving
        with torch.no_grad():
            assert torch.allclose(again(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_adam_moves_a_rescaled_model_much_less(name):
    x_eval = torch.randn(64, 3, 32, 32)
    drift = {}
    for scaled in (False, True):
        model = trained_looking(name)
        if scaled:
            scale_for_adam(model)
        with torch.no_grad():
            before = model.eval()(x_eval)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        torch.manual_seed(1)
        model.train()
        for m in model.modules():  # statistics follow the data either way: measure the weights' drift
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = 0.0
        for _ in range(15):
            loss = nn.functional.cross_entropy(model(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            drift[scaled] = (model.eval()(x_eval) - before).norm() / before.norm()
    assert drift[True] < 0.3 * drift[False], drift


def test_compact_halves_weights_keeps_statistics_and_the_function():
    model = scale_for_adam(trained_looking('resnet50'))
    state = compact(model.state_dict())
    assert state['layer2.0.layer.0.0.weight'].dtype == torch.float16
    assert state['layer2.0.layer.0.1.running_var'].dtype == torch.float32
    assert all(v.isfinite().all() for v in state.values() if v.is_floating_point())
    again = MODELS['resnet50']()
    again.load_state_dict(state)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), again.eval()(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.9
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())


def test_scaled_weights_are_exact_power_of_two_multiples():
    # what "the same function" rests on: no rounding in the weights themselves
    model = trained_looking('resnet50')
    scaled = scale_for_adam(copy.deepcopy(model))
    for (name, before), after in zip(model.state_dict().items(), scaled.state_dict().values()):
        if name.endswith('weight') and before.dim() == 4:
            ratio = after / before
            assert torch.all(ratio[before != 0] == ratio[before != 0].flatten()[0]), name
            assert torch.log2(ratio.flatten()[0]) == torch.log2(ratio.flatten()[0]).round(), name


def bn_vgg(seed=0):
    """VGG16 with BatchNorm after every convolution, with statistics from real batches."""
    torch.manual_seed(seed)
    model = VGG(make_layers(cfg['D'], batch_norm=True))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.randn(64, 3, 32, 32))
    return model.eval()


def test_folding_batchnorm_gives_the_assignments_vgg16_computing_the_same():
    model = bn_vgg()
    folded = fold_batchnorm(model)
    assert folded.state_dict().keys() == vgg16().state_dict().keys()  # the BN-free assignment model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), folded.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    # and scaled for Adam afterwards, still the same function
    with torch.no_grad():
        assert torch.allclose(scale_for_adam(folded)(x), expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())


def test_scaling_twice_or_scaling_another_network_is_refused():
    model = scale_for_adam(trained_looking('vgg16'))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ScalingError, match='scaled already'):
        scale_for_adam(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    with pytest.raises(ScalingError, match='scaled already'):
        scale_for_adam(scale_for_adam(trained_looking('resnet50')))
    with pytest.raises(ScalingError, match='Sequential is not one of the assignment models'):
        scale_for_adam(nn.Sequential(nn.Linear(2, 2)))
    assert not looks_scaled(trained_looking('vgg16')) and not looks_scaled(trained_looking('resnet50'))


@pytest.mark.slow
def test_scale_weights_tool_refuses_in_one_line(tmp_path):
    # as its own process: the excepthook, not only the message
    torch.save({'w': torch.zeros(3)}, tmp_path / 'other.ckpt')
    torch.save(scale_for_adam(trained_looking('vgg16')).state_dict(), tmp_path / 'scaled.ckpt')
    for name, message in (('other.ckpt', 'neither a VGG16 nor a ResNet50_layer4'), ('scaled.ckpt', 'scaled already')):
        one_line_error(run('-m tools.scale_weights', tmp_path / name, tmp_path / 'o.ckpt'), re.escape(message))
        assert not (tmp_path / 'o.ckpt').exists()


def test_the_maintainer_tools_answer_help_and_mistakes_in_one_line(tmp_path):
    missing = str(tmp_path / 'nope.ckpt')
    for tool, args, rc, message in (
            ('ship_checkpoint', ['--help'], 0, 'usage: python -m tools.ship_checkpoint'),
            ('ship_checkpoint', [], 2, 'error: the following arguments are required: TRAINED.ckpt'),
            ('ship_checkpoint', ['--force', 'x.ckpt'], 2, 'error: unrecognized arguments: --force'),
            ('ship_checkpoint', [missing], 1, f'checkpoint not found: {missing}'),
            ('scale_weights', [missing], 2, 'required: OUT.ckpt'),
            ('scale_weights', [missing, str(tmp_path / 'o.ckpt')], 1, 'a checkpoint train.py wrote'),
            ('training_curves', ['run.json'], 2, 'required: png'),
            ('training_curves', [str(tmp_path / 'run.json'), str(tmp_path / 'c.png')], 1, 'run.json not found'),
            ('training_curves', [os.path.join(ROOT, 'README.md'), str(tmp_path / 'c.png')], 1,
             "README.md is not train.py's per-epoch log"),
            ('training_curves', [os.path.join(ROOT, 'docs'), str(tmp_path / 'c.png')], 1, 'is not train.py'),
            ('benchmark', ['--data', str(tmp_path), '--checkpoint', missing, '--rounds', '0'], 2,
             'argument --rounds: must be at least 1, not 0')):
        r = in_process(f'-m tools.{tool}', *args)
        if rc:
            one_line_error(r, re.escape(message), rc)
            assert '--checkpoint' not in r.stderr  # main.py's advice, not these tools'
        else:
            assert r.returncode == 0 and message in r.stdout
    assert os.listdir(tmp_path) == []


def test_a_vgg16_whose_head_varies_more_is_scaled_less_and_keeps_batches_safe():
    # a 19-epoch VGG16 had head variances ~0.2: 2^60 would have allowed batches of 529 only
    usual, wide = trained_looking('vgg16'), trained_looking('vgg16')
    with torch.no_grad():  # the same function, with a head input 16x wider: variance x 256
        wide.classifier[1].weight.mul_(16)
        wide.classifier[1].bias.mul_(16)
        wide.classifier[2].running_mean.mul_(16)
        wide.classifier[2].running_var.add_(1e-5).mul_(256).sub_(1e-5)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        expected = wide(x)
    growth = {}  # log2 of how much the head's largest variance grew: twice the scale's bits
    for name, model in (('usual', usual), ('wide', wide)):
        before = model.classifier[2].running_var.max()
        scale_for_adam(model)
        growth[name] = (model.classifier[2].running_var.max() / before).log2().item()
        assert largest_safe_batch(model) >= 4000 and looks_scaled(model)
    assert round(growth['usual']) == 120  # the full 2^60
    assert 100 <= growth['wide'] < 120  # less, still far beyond Adam's steps
    with torch.no_grad():
        assert torch.allclose(wide(x), expected, rtol=1e-4, atol=1e-5)


def test_the_ship_tool_states_the_ship_rule():
    r = in_process('-m tools.ship_checkpoint', '--help')
    text = ' '.join(r.stdout.split())
    assert r.returncode == 0 and "main.py's default run over seeds 0, 1 and 2" in text
    assert 'by at least 0.5 point' in text and 'within 1 point of that mean' in text
