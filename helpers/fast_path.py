"""What makes main.py's fine-tune fast without changing what it computes.

Measured on this project's machines (numbers in the README):
  * data: every image is decoded once and kept as one uint8 tensor on the
    device; crop, flip and normalize run on whole batches there, instead of
    PIL transforms image by image in the main process;
  * channels_last: oneDNN and cuDNN pick faster convolutions for it (ResNet's
    1x1 convolutions most of all);
  * on the CPU, 1x1 convolutions as one matrix product over the pixels
    (ResNet has 40 of them): MKL's GEMM forward and backward measured 1.25-1.8x
    faster than oneDNN's 1x1 kernels on these 2x2 to 8x8 maps;
  * bfloat16 autocast on GPUs that have it (helpers/devices.py).

The data side (decode once, batched augmentation) is helpers/data.py's
`tensor_loaders`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product: the same parameters and
    arithmetic, a faster kernel on the CPU. Swapped in by `prepare`."""

    def forward(self, x):
        if self.stride != (1, 1):
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory


def prepare(model, device):
    """The model on `device` in channels_last, with the CPU's faster 1x1 convolutions.

    Parameter names and shapes do not change, so checkpoints load and save as before.
    """
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == 'cpu':
        for m in model.modules():
            if (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.padding == (0, 0)
                    and m.dilation == (1, 1) and m.groups == 1):
                m.__class__ = PointwiseConv2d
    return model
