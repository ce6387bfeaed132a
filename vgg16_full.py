"""VGG16 for CIFAR-10, exactly as the course assignment defines it: thirteen 3x3 convolutions without
BatchNorm, then a small CIFAR head. Its `vgg16_epoch250.ckpt` loads with `strict=True`."""
import math

import torch.nn as nn

__all__ = ['VGG', 'make_layers', 'vgg16', 'cfg']


class VGG(nn.Module):
    def __init__(self, features):
        super(VGG, self).__init__()
        self.features = features
        # 32x32 inputs leave a 1x1x512 map after five poolings, hence 512 inputs
        # instead of ImageNet's 512*7*7.
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(512, 10),
        )
        # He initialisation (fan-out) keeps activations from vanishing in a
        # 13-layer stack that has no BatchNorm to rescue it.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
                m.bias.data.zero_()

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.classifier(x)
        return x


def make_layers(cfg, batch_norm=False):
    layers = []
    in_channels = 3
    for v in cfg:
        if v == 'M':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


cfg = {
    'D': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
}


def vgg16():
    """VGG 16-layer model (configuration "D"), no BatchNorm in the features."""
    return VGG(make_layers(cfg['D']))
