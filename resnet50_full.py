"""ResNet50_layer4: the course's bottleneck ResNet-50 for 32x32 CIFAR-10 images. Parameter names and
shapes are the assignment's, so its `resnet50_epoch285.ckpt` loads with `strict=True`."""
import torch.nn as nn

__all__ = ['conv1x1', 'conv3x3', 'ResidualBlock', 'ResNet50_layer4']


def conv1x1(in_channels, out_channels, stride, padding):
    """1x1 convolution -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv3x3(in_channels, out_channels, stride, padding):
    """3x3 convolution -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Bottleneck block: 1x1 reduce (strided when downsampling), 3x3, 1x1 expand, plus a projected
    shortcut. The output is the plain sum: as in the assignment there is no ReLU after it."""

    def __init__(self, in_channels, middle_channels, out_channels, downsample=False):
        super(ResidualBlock, self).__init__()
        self.downsample = downsample
        stride = 2 if downsample else 1
        self.layer = nn.Sequential(
            conv1x1(in_channels, middle_channels, stride, 0),
            conv3x3(middle_channels, middle_channels, 1, 1),
            conv1x1(middle_channels, out_channels, 1, 0),
        )
        if downsample:
            self.downsize = conv1x1(in_channels, out_channels, 2, 0)
        else:
            self.make_equal_channel = conv1x1(in_channels, out_channels, 1, 0)

    def forward(self, x):
        out = self.layer(x)
        if self.downsample:
            return out + self.downsize(x)
        # Always projected: the assignment's `x.size() is not out.size()` compares
        # object identity, so it is always true, and its checkpoints learnt that.
        return out + self.make_equal_channel(x)


class ResNet50_layer4(nn.Module):
    def __init__(self, num_classes=10):
        super(ResNet50_layer4, self).__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3),  # 32x32 -> 16x16
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # 16x16 -> 8x8
        )
        self.layer2 = nn.Sequential(
            ResidualBlock(64, 64, 256),
            ResidualBlock(256, 64, 256),
            ResidualBlock(256, 64, 256, downsample=True),  # 8x8 -> 4x4
        )
        self.layer3 = nn.Sequential(
            ResidualBlock(256, 128, 512),
            ResidualBlock(512, 128, 512),
            ResidualBlock(512, 128, 512),
            ResidualBlock(512, 128, 512, downsample=True),  # 4x4 -> 2x2
        )
        self.layer4 = nn.Sequential(
            ResidualBlock(512, 256, 1024),
            *[ResidualBlock(1024, 256, 1024) for _ in range(5)],
        )
        self.fc = nn.Linear(1024, num_classes)
        self.avgpool = nn.AvgPool2d(2, 2)  # 2x2 -> 1x1

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight.data)

    def forward(self, x):
        out = self.layer1(x)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = self.avgpool(out)
        out = out.view(out.size(0), -1)
        out = self.fc(out)
        return out
