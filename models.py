"""The two assignment models by name, with their shipped checkpoints."""
import torch

from resnet50_full import ResNet50_layer4
from vgg16_full import VGG, vgg16

MODELS = {'resnet50': ResNet50_layer4, 'vgg16': vgg16}
PRETRAINED = {'resnet50': 'checkpoints/resnet50_cifar10.ckpt',
              'vgg16': 'checkpoints/vgg16_cifar10.ckpt'}
TITLES = {'resnet50': 'ResNet50_layer4', 'vgg16': 'VGG16'}


def name_of(model):
    """'resnet50' or 'vgg16' for an instance of either model."""
    if isinstance(model, ResNet50_layer4):
        return 'resnet50'
    if isinstance(model, VGG):
        return 'vgg16'
    raise ValueError(f'not an assignment model: {type(model).__name__}')


def state_shapes(name):
    """{key: shape} of a model's state dict, built without allocating weights."""
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in MODELS[name]().state_dict().items()}
