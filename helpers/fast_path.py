"""What makes main.py's fine-tune fast without changing what it computes.

Measured on this project's machines (numbers in the README):
  * data: every image is decoded once and kept as one uint8 tensor on the
    device; crop, flip and normalize run on whole batches there, instead of
    PIL transforms image by image in the main process;
  * channels_last: oneDNN and cuDNN pick faster convolutions for it (ResNet's
    1x1 convolutions most of all);
  * on the CPU, 1x1 convolutions as one matrix product over the pixels
    (ResNet has 40 of them) where that measured faster than oneDNN's 1x1
    kernels on these 2x2 to 8x8 maps (see `pointwise_as_gemm`);
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


def pointwise_as_gemm(bf16=False):
    """Whether this CPU runs 1x1 convolutions faster as PointwiseConv2d's matrix product.

    Measured with ResNet50_layer4, one training step: in bf16 autocast on an
    AVX512-BF16 CPU GEMM took 0.194 s against oneDNN's 0.406 s (batch 128,
    SGD); in float32 on AVX2-only CPUs 0.912 s against 1.141 s (batch 128,
    SGD) and 0.72-0.82 s against 0.78-0.89 s (batch 100, Adam, as main.py),
    but in float32 on an AVX-512 CPU 0.376 s against 0.31 s (batch 100, Adam),
    where oneDNN's own kernels win.
    """
    return bf16 or torch.backends.cpu.get_cpu_capability() != 'AVX512'


def prepare(model, device, bf16=False):
    """The model on `device` in channels_last, with the CPU's faster 1x1 convolutions.

    `bf16`: the model will run under CPU bf16 autocast (train.py on CPUs that
    have it). Parameter names and shapes do not change, so checkpoints load and
    save as before.
    """
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == 'cpu' and pointwise_as_gemm(bf16):
        for m in model.modules():
            if (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.padding == (0, 0)
                    and m.dilation == (1, 1) and m.groups == 1):
                m.__class__ = PointwiseConv2d
    return model
