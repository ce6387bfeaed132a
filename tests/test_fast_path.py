"""The fast path (helpers/fast_path.py) computes what the plain model computes."""
import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms as T

from conftest import make_image_folder
from helpers import data, fast_path
from helpers.checkpoints import MODELS

CPU = torch.device('cpu')


@pytest.mark.slow  # a float64 training step of ResNet50_layer4: seconds
def test_the_prepared_resnet_computes_the_same_forward_and_gradients():
    # float64, so that rounding cannot hide a difference; bf16=True: every CPU kernel that float64 runs
    torch.manual_seed(0)
    model = MODELS['resnet50']().double()
    fast = fast_path.prepare(copy.deepcopy(model), CPU, bf16=True)
    assert fast.state_dict().keys() == model.state_dict().keys()  # checkpoints load and save as before
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    logits = [m.train()(x.contiguous(memory_format=layout))
              for m, layout in ((model, torch.contiguous_format), (fast, torch.channels_last))]
    assert torch.allclose(*logits, rtol=1e-9, atol=1e-9)
    for out in logits:
        F.cross_entropy(out, y).backward()
    for (name, p), q in zip(model.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-7, atol=1e-9), name


def test_a_3x3_convolution_on_a_2x2_map_as_one_matrix_product_matches_conv2d():
    torch.manual_seed(0)
    for bias in (True, False):  # float64: forward and every gradient
        conv = nn.Conv2d(5, 7, 3, padding=1, bias=bias).double()
        x = torch.randn(4, 5, 2, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        g = torch.randn(4, 7, 2, 2, dtype=torch.float64)
        results = []
        for fn in (conv, lambda x: fast_path.conv3x3_on_2x2(x, conv.weight, conv.bias)):
            leaf = x.detach().requires_grad_()
            y = fn(leaf)
            results.append([y, *torch.autograd.grad(y, [leaf, *conv.parameters()], g)])
        for a, b in zip(*results):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_the_bf16_resnet_is_as_close_to_float32_as_onednns_own_bf16():
    torch.manual_seed(0)
    model = MODELS['resnet50']().eval()
    fast = fast_path.prepare(copy.deepcopy(model), CPU, bf16=True)
    onednn = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = model(x)
        assert torch.allclose(fast(x), exact, rtol=1e-4, atol=1e-5)  # float32: the same
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y, reference = fast(x).float(), onednn(x).float()
    assert (y - exact).abs().max() <= 2 * (reference - exact).abs().max() + 1e-3


def test_a_loader_is_the_tensor_loader_only_as_the_handout_writes_it(tmp_path, capsys):
    root = make_image_folder(tmp_path, train_per_class=1, test_per_class=1)

    def loader(transform=data.assignment_transform(True), **options):
        return fast_path.loader(DataLoader(data.CIFAR10(root, True, transform), 5, shuffle=True, **options), True, CPU)
    assert isinstance(loader(), data.TensorLoader) and capsys.readouterr().out == ''
    # Normalize with numpy arrays: compared without a traceback (and runs as written); drop_last is the student's
    arrays = T.Compose([*data.assignment_transform(True).transforms[:3], T.Normalize(np.array(data.MEAN), data.STD)])
    for options in ({'transform': arrays}, {'drop_last': True}):
        given = loader(**options)
        assert isinstance(given, DataLoader) and capsys.readouterr().out.startswith('note: ')
    pickle.dumps(given.dataset)  # DataLoader workers on Windows and macOS pickle the dataset
    with pytest.raises(SystemExit, match=r"transform_train fails on an image \(TypeError: 'list' object is not "
                                         r"callable\); fix its lines \(each transform in transforms\.Compose"):
        loader([T.ToTensor()])  # a list, not transforms.Compose([...]): said before the loop, not in it
