"""A table of the two assignment models: how to build each by name, its
shipped checkpoint and its title, and which one a model or state dict is."""
import functools

import torch

from resnet50_full import ResNet50_layer4
from vgg16_full import VGG, vgg16

MODELS = {'resnet50': ResNet50_layer4, 'vgg16': vgg16}
PRETRAINED = {'resnet50': 'checkpoints/resnet50_cifar10.ckpt',
              'vgg16': 'checkpoints/vgg16_cifar10.ckpt'}
TITLES = {'resnet50': 'ResNet50_layer4', 'vgg16': 'VGG16'}


@functools.lru_cache(maxsize=None)
def _state_shapes(name):
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in MODELS[name]().state_dict().items()}


def state_shapes(name):
    """{key: shape} of a model's state dict, built once without allocating weights."""
    return dict(_state_shapes(name))


def essential(keys):
    """All keys but BatchNorm's num_batches_tracked, which PyTorch 0.4 and older did not save."""
    return {k for k in keys if not k.endswith('num_batches_tracked')}


def resembles(keys):
    """'resnet50' or 'vgg16' for state dict keys that are that model's (shapes aside), else None."""
    keys = essential(keys)
    return next((name for name in MODELS if essential(state_shapes(name)) == keys), None)


def identify(state_dict):
    """'resnet50' or 'vgg16' for a state dict of that model: its keys and their shapes, else None."""
    name = resembles(state_dict.keys())
    if name is None:
        return None
    shapes = state_shapes(name)
    return name if all(tuple(v.shape) == shapes[k] for k, v in state_dict.items()) else None


def name_of(model):
    """'resnet50' or 'vgg16' for the assignment's models, None for any other network
    (a student's own, or VGG16 with BatchNorm, whose state dict differs)."""
    if isinstance(model, (ResNet50_layer4, VGG)):
        return identify(model.state_dict())
    return None


def title_of(model):
    name = name_of(model)
    return TITLES[name] if name else type(model).__name__


def own_network(model):
    """True for a network of the student's own in the "Choose model" lines (not VGG16 or ResNet50_layer4)."""
    return name_of(model) is None
