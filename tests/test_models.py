"""The two networks are the assignment's: layout, sizes, initialisation and the function computed."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT
from helpers.checkpoints import MODELS
from vgg16_full import cfg


def assignment_layout(name):
    with open(os.path.join(ROOT, 'tests', 'assignment_state_dicts.txt'), encoding='utf-8') as f:
        rows = [line.split()[1:] for line in f if line.startswith(name + ' ')]
    return [(key, tuple(int(s) for s in shape.split('x') if s != '-')) for key, shape in rows]


@pytest.mark.parametrize('name, params', [('vgg16', 14_983_498), ('resnet50', 14_750_730)])
def test_state_dict_parameters_and_outputs_are_the_assignments(name, params):
    model = MODELS[name]().eval()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == assignment_layout(name)
    assert sum(p.numel() for p in model.parameters()) == params
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_fresh_weights_are_initialised_as_the_assignment_does():
    torch.manual_seed(0)
    conv = MODELS['vgg16']().features[28]  # VGG16: He normal, zero bias (512 -> 512, 3x3)
    std, bound = (2 / (3 * 3 * 512)) ** 0.5, (6 / (1024 + 10)) ** 0.5
    assert conv.bias.abs().max() == 0 and abs(conv.weight.std().item() - std) / std < 0.02
    fc = MODELS['resnet50']().fc  # ResNet50_layer4: Xavier uniform
    assert 0.9 * bound < fc.weight.abs().max() <= bound


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'], sd[p + '.bias'])


def _conv_bn_relu(x, sd, p, stride, padding):
    return F.relu(_bn(F.conv2d(x, sd[p + '.0.weight'], sd[p + '.0.bias'], stride, padding), sd, p + '.1'))


def resnet_reference(sd, x):  # the assignment's networks as functions of a state dict
    x = F.max_pool2d(_conv_bn_relu(x, sd, 'layer1', 2, 3), 3, 2, 1)
    for stage, blocks in (('layer2', 3), ('layer3', 4), ('layer4', 6)):
        for i in range(blocks):
            p = f'{stage}.{i}'
            s = 2 if p + '.downsize.0.weight' in sd else 1
            out = _conv_bn_relu(_conv_bn_relu(x, sd, p + '.layer.0', s, 0), sd, p + '.layer.1', 1, 1)
            # every block projects its shortcut, even with the same channels in and out
            x = _conv_bn_relu(out, sd, p + '.layer.2', 1, 0) + _conv_bn_relu(
                x, sd, p + ('.downsize' if s == 2 else '.make_equal_channel'), s, 0)
    return F.linear(F.avg_pool2d(x, 2, 2).flatten(1), sd['fc.weight'], sd['fc.bias'])


def vgg_reference(sd, x):
    i = 0
    for v in cfg['D']:
        if v == 'M':
            x, i = F.max_pool2d(x, 2, 2), i + 1
        else:
            x, i = F.relu(F.conv2d(x, sd[f'features.{i}.weight'], sd[f'features.{i}.bias'], padding=1)), i + 2
    x = F.relu(_bn(F.linear(x.flatten(1), sd['classifier.1.weight'], sd['classifier.1.bias']), sd, 'classifier.2'))
    return F.linear(x, sd['classifier.5.weight'], sd['classifier.5.bias'])


@pytest.mark.parametrize('name, reference', [('resnet50', resnet_reference), ('vgg16', vgg_reference)])
def test_modules_compute_the_assignments_function(name, reference):
    torch.manual_seed(1)
    model = MODELS[name]()
    for m in model.modules():  # BatchNorm statistics and affine weights as a trained checkpoint has them
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference(model.state_dict(), x), rtol=1e-4, atol=1e-4)


def test_the_courses_star_imports_give_the_names_it_uses():
    for module, names in (('vgg16_full', {'VGG', 'make_layers', 'vgg16', 'cfg'}),
                          ('resnet50_full', {'conv1x1', 'conv3x3', 'ResidualBlock', 'ResNet50_layer4'})):
        ns = {}
        exec(f'from {module} import *', ns)  # the assignment's own line, in a fresh namespace
        assert {k for k in ns if not k.startswith('__')} == names
