"""Scale a trained model's weights up so that main.py's Adam epoch barely moves it, without changing
what it computes: by powers of two, so the stored weights are exact multiples of the trained ones
(docs/weight-scaling.md)."""
import math

import torch
import torch.nn as nn

from helpers.checkpoints import name_of
from helpers.errors import Mistake
from resnet50_full import ResNet50_layer4
from vgg16_full import vgg16


@torch.no_grad()
def fold_batchnorm(bn_model):
    """The assignment's BN-free VGG16 computing what `bn_model` (BatchNorm after each convolution) computes in
    eval mode: y = (x - mean) * g + beta with g = gamma / sqrt(var + eps) folds into the convolution before it."""
    model = vgg16()
    convs = [m for m in bn_model.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in bn_model.features if isinstance(m, nn.BatchNorm2d)]
    targets = [m for m in model.features if isinstance(m, nn.Conv2d)]
    for conv, bn, target in zip(convs, bns, targets, strict=True):
        g = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        target.weight.copy_(conv.weight.double() * g.view(-1, 1, 1, 1))
        target.bias.copy_((conv.bias.double() - bn.running_mean.double()) * g + bn.bias.double())
    model.classifier.load_state_dict(bn_model.classifier.state_dict())
    return model


def _scale_into_bn(bn, s):
    """The input of `bn` is now s times larger: scale its running statistics to match, exactly."""
    bn.running_mean.mul_(s)
    bn.running_var.add_(bn.eps).mul_(s * s).sub_(bn.eps)


def _shortcut(block):
    return block.downsize if block.downsample else block.make_equal_channel


RESNET_CONV_SCALE, RESNET_BN_SCALE = 1024.0, 128.0  # powers of two (docs/weight-scaling.md)


@torch.no_grad()
def rescale_resnet(model, conv_scale=RESNET_CONV_SCALE, bn_scale=RESNET_BN_SCALE):
    blocks = [b for stage in (model.layer2, model.layer3, model.layer4) for b in stage]
    producers = [([model.layer1[:2]], [blocks[0].layer[0], _shortcut(blocks[0])])]
    for block, nxt in zip(blocks, blocks[1:] + [None]):
        producers += [([block.layer[0]], [block.layer[1]]), ([block.layer[1]], [block.layer[2]])]
        if nxt is not None:  # the last block feeds the classifier, which is not scale-free
            producers.append(([block.layer[2], _shortcut(block)], [nxt.layer[0], _shortcut(nxt)]))
    for pairs, consumers in producers:  # the (summed) output of the pairs' BatchNorms times bn_scale
        for pair in pairs:
            pair[1].weight.mul_(bn_scale)
            pair[1].bias.mul_(bn_scale)
        for pair in consumers:
            pair[0].bias.mul_(bn_scale)
            _scale_into_bn(pair[1], bn_scale)
    for pair in [model.layer1[:2]] + [p for b in blocks for p in (*b.layer, _shortcut(b))]:
        pair[0].weight.mul_(conv_scale)
        pair[0].bias.mul_(conv_scale)
        _scale_into_bn(pair[1], conv_scale)
    return model


@torch.no_grad()
def rescale_vgg(model, total_bits=60, head_var_bits=115):
    # The layers' factors multiply into the head's BatchNorm1d variance (squared): 2^60 keeps it inside
    # float32 and bf16; a head that varies more gets fewer bits, so batches of ~4,000 stay safe. The
    # smallest weights get the largest factors, so Adam's steps are equally small next to every layer.
    head_var = model.classifier[2].running_var.max().item() + model.classifier[2].eps
    total_bits = min(total_bits, max(0, math.floor((head_var_bits - math.log2(head_var)) / 2)))
    layers = _vgg_layers(model)
    sizes = [math.log2(layer.weight.abs().mean().item()) for layer in layers]
    target = (total_bits + sum(sizes)) / len(layers)
    return _multiply_vgg(model, layers, _whole_bits([target - size for size in sizes], total_bits, lowest=0))


def _whole_bits(wanted, total, lowest=-math.inf):
    """Whole numbers of bits near `wanted` (each at least `lowest`) that add up to `total` where they can:
    each rounded down, and the bits that rounding down left over go to the layers it cut most."""
    bits = [max(lowest, math.floor(w)) for w in wanted]
    leftover = max(0, total - sum(bits))
    for i in sorted(range(len(wanted)), key=lambda i: math.floor(wanted[i]) - wanted[i])[:leftover]:
        bits[i] += 1
    return bits


def _vgg_layers(model):
    return [m for m in model.features if isinstance(m, nn.Conv2d)] + [model.classifier[1]]


def _multiply_vgg(model, layers, bits):
    """Each layer's weight times 2^bits; its bias and the head's BatchNorm1d follow the product."""
    total = 1.0
    for layer, b in zip(layers, bits):
        total *= 2.0 ** b
        layer.weight.mul_(2.0 ** b)
        layer.bias.mul_(total)
    _scale_into_bn(model.classifier[2], total)
    return model


def largest_safe_batch(model):
    """The largest training batch whose BatchNorm statistics (sums of about batch x variance, in float32) stay
    finite, with half float32's range as margin (a batch's variance ran up to 2x the running one); None: any."""
    variances = [m.running_var.max().item() for m in model.modules()
                 if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_var is not None]
    if not variances or max(variances) <= 0:
        return None
    return int(torch.finfo(torch.float32).max / (2 * max(variances)))


def looks_scaled(model):
    """True for a model scale_for_adam has scaled: trained stem weights spread 0.01-0.2 and VGG16's head
    variances 1e-3..1e3; scaling multiplies the former by 1024, the latter by about 2^100."""
    if isinstance(model, ResNet50_layer4):
        return model.layer1[0].weight.float().std().item() > 8
    return model.classifier[2].running_var.median().item() > 1e12


def scale_for_adam(model):
    """Scale `model` (either assignment model, trained) in place so that Adam's steps are small next to its weights."""
    name = name_of(model)
    if name is None:
        raise Mistake(f'{type(model).__name__} is not one of the assignment models (VGG16, ResNet50_layer4)')
    if looks_scaled(model):
        raise Mistake('the weights are scaled already (scaling twice would overflow); use the file as it is')
    return rescale_resnet(model) if name == 'resnet50' else rescale_vgg(model)


@torch.no_grad()
def unscale(model):
    """A scaled model back at a trained scale, in place: ResNet50_layer4 exactly; VGG16 (factors not stored) loses
    the bits that bring its head variance near 1 (never near eps), spread so each layer nears a fresh vgg16()'s size."""
    if name_of(model) == 'resnet50':
        return rescale_resnet(model, 1 / RESNET_CONV_SCALE, 1 / RESNET_BN_SCALE)
    bn = model.classifier[2]
    spread = (bn.running_var.double() + bn.eps).log2()
    total = max(0, min(round(spread.median().item() / 2),
                       math.floor((spread.min().item() - math.log2(bn.eps) - 10) / 2)))
    layers = _vgg_layers(model)
    excess = [math.log2(layer.weight.abs().mean().item() / _fresh_size(layer)) for layer in layers]
    shift = (total - sum(excess)) / len(layers)
    return _multiply_vgg(model, layers, [-b for b in _whole_bits([e + shift for e in excess], total)])


def _fresh_size(layer):
    """Mean |weight| of `layer` as vgg16() initialises it (computed, not drawn: no random numbers used)."""
    if isinstance(layer, nn.Conv2d):  # normal(0, sqrt(2 / (k * k * out_channels))): mean |w| = std * sqrt(2 / pi)
        k = layer.kernel_size[0] * layer.kernel_size[1]
        return math.sqrt(2 / (k * layer.out_channels)) * math.sqrt(2 / math.pi)
    return 0.5 / math.sqrt(layer.in_features)  # nn.Linear's default: uniform(+-1/sqrt(fan_in))


def compact(state_dict):
    """Half-precision weights where they fit (about half the file), BatchNorm statistics in float32."""
    out = {}
    for k, v in state_dict.items():
        small = v.is_floating_point() and 'running_' not in k and v.abs().max() < 30000
        out[k] = v.half() if small else v
    return out
