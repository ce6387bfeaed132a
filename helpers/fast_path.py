"""What makes main.py's fine-tune fast without changing what it computes: channels_last, CPU convolutions
as matrix products where that measured faster, and Adam's fused kernel (docs/speed.md has the A/B figures)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import data
from helpers.checkpoints import name_of
from helpers.errors import Mistake
from vgg16_full import VGG


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution as a matrix product, faster in a CPU training step; in a bf16 test pass
    (no gradients) oneDNN's own 1x1 kernel is faster, so it is used there."""

    def forward(self, x):
        if x.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            return super().forward(x)
        x = x.permute(0, 2, 3, 1)  # channels last: each pixel's channels side by side
        if self.stride != (1, 1):
            # strided after the permute, so that the gradient is channels_last too: a gradient in
            # the other layout makes every later elementwise backward 30x slower
            x = x[:, ::self.stride[0], ::self.stride[1]]
        y = F.linear(x, self.weight.flatten(1), self.bias)
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory


# which of a 3x3 kernel's nine taps joins output pixel o of a 2x2 map to input pixel i
# (pixels in the order (0, 0), (0, 1), (1, 0), (1, 1)): row 4 * o + i of this 0/1 matrix
_PIXELS = [(0, 0), (0, 1), (1, 0), (1, 1)]
_TAP_OF = torch.tensor([[float(t == 3 * (iy - oy + 1) + (ix - ox + 1)) for t in range(9)]
                        for oy, ox in _PIXELS for iy, ix in _PIXELS])


def conv3x3_on_2x2(x, weight, bias):
    """conv2d(x, weight, bias, padding=1) for a 2x2 map as one 4C_out x 4C_in matrix product: every output
    pixel sees all four input pixels, each through another tap (the other taps would multiply padding)."""
    n, c = x.shape[:2]
    co = weight.shape[0]
    taps = weight.permute(2, 3, 0, 1).reshape(9, co * c)
    dense = (_TAP_OF.to(weight.dtype) @ taps).view(4, 4, co, c).transpose(1, 2).reshape(4 * co, 4 * c)
    bias = None if bias is None else bias.repeat(4)
    y = F.linear(x.permute(0, 2, 3, 1).reshape(n, 4 * c), dense, bias)
    return y.view(n, 2, 2, co).permute(0, 3, 1, 2)  # NCHW shape, channels_last memory


class TinyMapConv2d(nn.Conv2d):
    """A 3x3 convolution (padding 1) that runs as `conv3x3_on_2x2` on a 2x2 map in bf16, about 4x faster
    than oneDNN there; in float32, or on larger maps, oneDNN's own kernel is as fast."""

    def forward(self, x):
        dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else x.dtype
        if x.shape[-2:] != (2, 2) or dtype != torch.bfloat16:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast('cpu', enabled=False):
            return conv3x3_on_2x2(x.to(dtype), self.weight.to(dtype), bias)


class Float32BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d in float32 under bf16 autocast: the shipped VGG16's head sees values near 2^60
    (helpers/weight_scaling.py) and squares them, which needs float32's mantissa."""

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def pointwise_as_gemm(bf16=False):
    """Whether this CPU's training step runs 1x1 convolutions faster as PointwiseConv2d (docs/speed.md)."""
    return bf16 or torch.backends.cpu.get_cpu_capability() != 'AVX512'


def adam_options(device):
    """torch.optim.Adam's fused kernel (the same update in one pass over the parameters) on the CPU and CUDA."""
    return {'fused': True} if device.type in ('cpu', 'cuda') else {}


def channels_last(model, device):
    """Whether `model` (and so its input batches) runs in channels_last memory on `device`: not a student's own
    network, which may x.view() its activations, nor on the Apple GPU, where its backward was ~30x slower."""
    return bool(name_of(model) or isinstance(model, VGG)) and device.type != 'mps'


def prepare(model, device, bf16=False):
    """`model` on `device` with the fast layers swapped in (`bf16`: it will run under bf16 autocast). Parameter
    names and shapes do not change, so checkpoints load and save as before."""
    layout = torch.channels_last if channels_last(model, device) else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    for m in model.modules():
        cpu_conv = device.type == 'cpu' and type(m) is nn.Conv2d and m.dilation == (1, 1) and m.groups == 1
        if cpu_conv and m.kernel_size == (1, 1) and m.padding == (0, 0) and pointwise_as_gemm(bf16):
            m.__class__ = PointwiseConv2d
        elif (cpu_conv and bf16 and m.kernel_size == (3, 3) and m.padding == (1, 1) and m.stride == (1, 1)
              and m.padding_mode == 'zeros'):
            m.__class__ = TinyMapConv2d
        elif bf16 and type(m) is nn.BatchNorm1d:
            m.__class__ = Float32BatchNorm1d
    return model


def _same(a, b):
    """Whether transforms `a` and `b` are equal: the same types with the same parameters (a list and a tuple of the
    same numbers alike), a Compose's in order."""
    def values(t):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(t).items() if k != 'transforms'}
    inner = getattr(a, 'transforms', []), getattr(b, 'transforms', [])
    return (type(a) is type(b) and repr(values(a)) == repr(values(b)) and len(inner[0]) == len(inner[1])
            and all(map(_same, *inner)))  # repr: numpy arrays and tensors compare too


def loader(given, train, device, seed=None, channels_last=False, plain=False):
    """main.py's DataLoader `given` as a data.TensorLoader (whole uint8 batches cropped, flipped and normalised in
    one step each: the same batches for a seed) where its dataset, transform and order are the assignment's; else
    (or `plain`) `given` as written, said in one line, its image files checked first."""
    from torch.utils.data import RandomSampler, SequentialSampler
    from torchvision.datasets import CIFAR10, DatasetFolder
    dataset, split = given.dataset, 'train' if train else 'test'
    ours = isinstance(dataset, (CIFAR10, DatasetFolder)) and given.batch_sampler is not None and not given.drop_last \
        and type(given.sampler) is (RandomSampler if train else SequentialSampler)  # the handout's shuffle=True/False
    if ours and not plain and _same(dataset.transform, data.assignment_transform(train)):
        return data.TensorLoader(*data.pixels(dataset), given.batch_size, train, device, channels_last, seed)
    if not plain:
        print(f"note: {f'transform_{split}' if ours else f'{split}_loader'} differs from the assignment's: using it "
              'as written, per image (slower)')
    data.check_images(dataset)
    try:  # one image through the transform as written: a mistake in its lines is said here, not in the loop
        with torch.random.fork_rng():
            given.collate_fn([dataset[0]])
    except Exception as e:  # noqa: BLE001 - whatever a student's transform raises
        raise Mistake(f"transform_{split} fails on an image ({type(e).__name__}: {str(e).strip()[:160]}); fix its "
                      'lines (each transform in transforms.Compose([...]), ToTensor() before Normalize)') from None
    return given
