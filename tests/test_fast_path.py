"""The fast path computes what the plain model computes."""
import copy

import torch

from helpers import fast_path
from helpers.model_table import MODELS


def test_prepared_resnet_computes_the_same_forward_and_gradients():
    # in float64, so that rounding (amplified by 13 blocks and BatchNorm on a
    # batch of 6) cannot hide a real difference
    torch.manual_seed(0)
    model = MODELS['resnet50']().double()
    fast = fast_path.prepare(copy.deepcopy(model), torch.device('cpu'), bf16=True)  # always swaps 1x1 convs
    swapped = [m for m in fast.modules() if isinstance(m, fast_path.PointwiseConv2d)]
    assert len(swapped) == 39  # 26 in the blocks' layers, 13 shortcuts
    assert fast.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    for m in (model, fast):
        m.train()
        torch.nn.functional.cross_entropy(m(x if m is model else x.contiguous(memory_format=torch.channels_last)),
                                          y).backward()
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), fast.eval()(x), rtol=1e-9, atol=1e-9)
    for (name, p), q in zip(model.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-7, atol=1e-9), name


def test_strided_pointwise_conv_matches_conv2d():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 1, stride=2)
    fast = copy.deepcopy(conv)
    fast.__class__ = fast_path.PointwiseConv2d
    x = torch.randn(3, 8, 5, 5)
    assert torch.allclose(conv(x), fast(x), atol=1e-6)


def test_1x1_convolutions_are_swapped_only_where_gemm_measured_faster(monkeypatch):
    def swapped(capability, bf16):
        monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: capability)
        model = fast_path.prepare(MODELS['resnet50'](), torch.device('cpu'), bf16=bf16)
        return sum(isinstance(m, fast_path.PointwiseConv2d) for m in model.modules())
    assert swapped('AVX2', bf16=False) == 39
    assert swapped('AVX512', bf16=False) == 0  # oneDNN's float32 1x1 kernels win there
    assert swapped('AVX512', bf16=True) == 39
