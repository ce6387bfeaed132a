"""rescale.py keeps the function and makes Adam's steps small next to the weights."""
import copy

import pytest
import torch
import torch.nn as nn

from models import MODELS
from rescale import compact, rescale


def trained_looking(name, seed=0):
    """A model with BatchNorm statistics from real forward passes, as after training."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None  # cumulative average
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = 0.1
    return model.eval()


@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_rescaling_keeps_the_function(name):
    model = trained_looking(name)
    scaled = rescale(copy.deepcopy(model))
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scaled(x), model(x), rtol=1e-4, atol=1e-5)
    assert scaled.state_dict().keys() == model.state_dict().keys()
    # the weights really are larger
    first_conv = next(m for m in scaled.modules() if isinstance(m, nn.Conv2d))
    original = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.abs().mean() >= 8 * original.weight.abs().mean()


@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_adam_moves_a_rescaled_model_much_less(name):
    x_eval = torch.randn(64, 3, 32, 32)
    drift = {}
    for scaled in (False, True):
        model = trained_looking(name)
        if scaled:
            rescale(model)
        with torch.no_grad():
            before = model.eval()(x_eval)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        torch.manual_seed(1)
        model.train()
        for m in model.modules():  # statistics follow the data either way: measure the weights' drift
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = 0.0
        for _ in range(15):
            loss = nn.functional.cross_entropy(model(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            drift[scaled] = (model.eval()(x_eval) - before).norm() / before.norm()
    assert drift[True] < 0.3 * drift[False], drift


def test_compact_halves_weights_keeps_statistics_and_the_function():
    model = rescale(trained_looking('resnet50'))
    state = compact(model.state_dict())
    assert state['layer2.0.layer.0.0.weight'].dtype == torch.float16
    assert state['layer2.0.layer.0.1.running_var'].dtype == torch.float32
    assert all(v.isfinite().all() for v in state.values() if v.is_floating_point())
    again = MODELS['resnet50']()
    again.load_state_dict(state)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), again.eval()(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.9
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())
