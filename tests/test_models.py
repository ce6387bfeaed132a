"""The two networks are the assignment's: layout, sizes and the function computed."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT
from helpers.model_table import MODELS
from resnet50_full import ResNet50_layer4, ResidualBlock
from vgg16_full import VGG, cfg, make_layers, vgg16


def frozen_layout(model):
    rows = []
    with open(os.path.join(ROOT, 'tests', 'assignment_state_dicts.txt')) as f:
        for line in f:
            if line.startswith(model + ' '):
                _, key, shape = line.split()
                rows.append((key, () if shape == '-' else tuple(int(s) for s in shape.split('x'))))
    return rows


@pytest.mark.parametrize('name, entries', [('vgg16', 35), ('resnet50', 373)])
def test_state_dict_is_the_assignments_key_for_key(name, entries):
    sd = MODELS[name]().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == frozen_layout(name)
    assert len(sd) == entries


@pytest.mark.parametrize('name, params', [('vgg16', 14_983_498), ('resnet50', 14_750_730)])
def test_parameter_counts_and_output_shape(name, params):
    model = MODELS[name]().eval()
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_vgg_features_have_13_convs_and_no_batchnorm():
    features = vgg16().features
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and not any(isinstance(m, nn.BatchNorm2d) for m in features)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in features) == 5
    assert any(isinstance(m, nn.BatchNorm2d) for m in make_layers(cfg['D'], batch_norm=True))


def test_vgg_init_is_he_normal_with_zero_bias():
    torch.manual_seed(0)
    conv = vgg16().features[28]  # 512 -> 512, 3x3
    assert conv.bias.abs().max() == 0
    expected = (2 / (3 * 3 * 512)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.02


def test_resnet_init_is_xavier_uniform():
    torch.manual_seed(0)
    fc = ResNet50_layer4().fc
    bound = (6 / (1024 + 10)) ** 0.5
    assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.9 * bound


def test_every_plain_block_projects_its_shortcut():
    torch.manual_seed(0)
    block = ResidualBlock(256, 64, 256).eval()  # same channels in and out
    x = torch.randn(2, 256, 4, 4)
    assert torch.allclose(block(x), block.layer(x) + block.make_equal_channel(x))
    assert not torch.allclose(block(x), block.layer(x) + x)
    down = ResidualBlock(256, 64, 256, downsample=True).eval()
    assert down(x).shape == (2, 256, 2, 2)
    assert torch.allclose(down(x), down.layer(x) + down.downsize(x))


# Independent functional versions of the assignment's networks, read straight
# from a state dict: the modules must compute exactly these.

def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'], sd[p + '.bias'])


def _conv_bn_relu(x, sd, p, stride, padding):
    x = F.conv2d(x, sd[p + '.0.weight'], sd[p + '.0.bias'], stride, padding)
    return F.relu(_bn(x, sd, p + '.1'))


def resnet_reference(sd, x):
    x = F.conv2d(x, sd['layer1.0.weight'], sd['layer1.0.bias'], 2, 3)
    x = F.max_pool2d(F.relu(_bn(x, sd, 'layer1.1')), 3, 2, 1)
    for stage, blocks in (('layer2', 3), ('layer3', 4), ('layer4', 6)):
        for i in range(blocks):
            p = f'{stage}.{i}'
            down = p + '.downsize.0.weight' in sd
            s = 2 if down else 1
            out = _conv_bn_relu(x, sd, p + '.layer.0', s, 0)
            out = _conv_bn_relu(out, sd, p + '.layer.1', 1, 1)
            out = _conv_bn_relu(out, sd, p + '.layer.2', 1, 0)
            x = out + _conv_bn_relu(x, sd, p + ('.downsize' if down else '.make_equal_channel'), s, 0)
    x = F.avg_pool2d(x, 2, 2).flatten(1)
    return F.linear(x, sd['fc.weight'], sd['fc.bias'])


def vgg_reference(sd, x):
    i = 0
    for v in cfg['D']:
        if v == 'M':
            x = F.max_pool2d(x, 2, 2)
            i += 1
        else:
            x = F.relu(F.conv2d(x, sd[f'features.{i}.weight'], sd[f'features.{i}.bias'], padding=1))
            i += 2
    x = F.linear(x.flatten(1), sd['classifier.1.weight'], sd['classifier.1.bias'])
    x = F.relu(_bn(x, sd, 'classifier.2'))
    return F.linear(x, sd['classifier.5.weight'], sd['classifier.5.bias'])


@pytest.mark.parametrize('name, reference', [('resnet50', resnet_reference), ('vgg16', vgg_reference)])
def test_modules_compute_the_assignments_function(name, reference):
    torch.manual_seed(1)
    model = MODELS[name]()
    # non-trivial BatchNorm statistics, as a trained checkpoint has
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    sd = model.state_dict()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(sd, x), rtol=1e-4, atol=1e-4)


def test_vgg_class_takes_any_features():
    model = VGG(make_layers([8, 'M', 512, 'M', 'M', 'M', 'M'])).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_courses_star_imports_export_what_it_uses():
    # the assignment's own lines, in a fresh namespace each
    ns = {}
    exec('from vgg16_full import *', ns)
    assert {'VGG', 'make_layers', 'vgg16', 'cfg'} == {k for k in ns if not k.startswith('__')}
    assert ns['vgg16']().state_dict().keys() == MODELS['vgg16']().state_dict().keys()
    ns = {}
    exec('from resnet50_full import *', ns)
    assert {'conv1x1', 'conv3x3', 'ResidualBlock', 'ResNet50_layer4'} == {k for k in ns if not k.startswith('__')}
    assert len(ns['ResNet50_layer4']().state_dict()) == 373
