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
    # its input's gradient keeps channels_last memory: in the other layout every
    # elementwise backward before it runs many times slower
    leaf = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x = leaf * 1  # not a leaf: autograd would give a leaf's .grad the leaf's layout anyway
    grads = []
    x.register_hook(grads.append)
    fast(x).sum().backward()
    assert grads[0].is_contiguous(memory_format=torch.channels_last)


def test_1x1_convolutions_are_swapped_only_where_gemm_measured_faster(monkeypatch):
    def swapped(capability, bf16):
        monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: capability)
        model = fast_path.prepare(MODELS['resnet50'](), torch.device('cpu'), bf16=bf16)
        return sum(isinstance(m, fast_path.PointwiseConv2d) for m in model.modules())
    assert swapped('AVX2', bf16=False) == 39
    assert swapped('AVX512', bf16=False) == 0  # oneDNN's float32 1x1 kernels win there
    assert swapped('AVX512', bf16=True) == 39


def test_3x3_convolution_on_a_2x2_map_as_one_matrix_product_matches_conv2d():
    # float64, forward and all three gradients, with and without bias
    torch.manual_seed(0)
    for bias in (True, False):
        conv = torch.nn.Conv2d(5, 7, 3, padding=1, bias=bias).double()
        x = torch.randn(4, 5, 2, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        g = torch.randn(4, 7, 2, 2, dtype=torch.float64)
        results = []
        for fn in (conv, lambda x: fast_path.conv3x3_on_2x2(x, conv.weight, conv.bias)):
            conv.zero_grad()
            x.grad = None
            y = fn(x)
            y.backward(g)
            results.append([y, x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
        for a, b in zip(*results):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
        assert results[1][0].is_contiguous(memory_format=torch.channels_last)


def test_bf16_resnet_runs_its_2x2_convolutions_as_matrix_products(monkeypatch):
    torch.manual_seed(0)
    model = MODELS['resnet50']().eval()
    fast = fast_path.prepare(copy.deepcopy(model), torch.device('cpu'), bf16=True)
    onednn = copy.deepcopy(model).to(memory_format=torch.channels_last)
    calls = []
    original = fast_path.conv3x3_on_2x2
    monkeypatch.setattr(fast_path, 'conv3x3_on_2x2', lambda *a: calls.append(a[0].shape) or original(*a))
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y, reference = fast(x).float(), onednn(x).float()
        # layer3's last block and the six of layer4 work on 2x2 maps; larger maps stay with oneDNN
        assert [tuple(s[1:]) for s in calls] == [(128, 2, 2)] + [(256, 2, 2)] * 6
        # as close to float32 as oneDNN's own bf16 convolutions are
        assert (y - exact).abs().max() <= 2 * (reference - exact).abs().max() + 1e-3
        calls.clear()
        fast(x)  # float32: oneDNN's kernel everywhere
    assert calls == []
