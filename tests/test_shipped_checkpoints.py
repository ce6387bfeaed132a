"""The checkpoints in checkpoints/ are what SHA256SUMS says, and load as the assignment loads them."""
import hashlib
import os

import pytest
import torch

from conftest import ROOT
from helpers.checkpoints import read_sums
from helpers.model_table import MODELS, PRETRAINED
from helpers.weight_scaling import largest_safe_batch

def shipped():
    return [(digest, name) for name, digest in read_sums(os.path.join(ROOT, 'checkpoints')).items()]


def test_every_listed_checkpoint_matches_its_sha256():
    rows = shipped()
    assert rows, 'SHA256SUMS lists no checkpoint'
    for digest, name in rows:
        with open(os.path.join(ROOT, 'checkpoints', name), 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


@pytest.mark.parametrize('model', sorted(MODELS))
def test_shipped_checkpoint_loads_strictly_with_the_assignments_lines(model):
    name = os.path.basename(PRETRAINED[model])
    if name not in [n for _, n in shipped()]:
        pytest.skip(f'no {name} shipped yet (see README)')
    net = MODELS[model]()
    checkpoint = torch.load(os.path.join(ROOT, PRETRAINED[model]))
    net.load_state_dict(checkpoint)  # strict, as in the assignment
    assert all(v.dtype == torch.float32 for k, v in checkpoint.items() if 'running_' in k)
    assert all(torch.isfinite(p).all() for p in net.state_dict().values() if p.is_floating_point())


def test_largest_safe_batch_is_where_the_scaled_vgg16_head_would_overflow():
    # the shipped VGG16's head BatchNorm1d, fed batches whose per-channel variance is its running one
    model = MODELS['vgg16']()
    model.load_state_dict(torch.load(os.path.join(ROOT, PRETRAINED['vgg16']), weights_only=True))
    limit = largest_safe_batch(model)
    assert 100 <= limit < 100000  # main.py's batch of 100 is allowed; the limit is real
    bn = model.classifier[2].train()
    spread = bn.running_var.sqrt()
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.isfinite(bn(torch.randn(limit, 512) * spread)).all()
        assert bn(torch.randn(limit, 512) * spread).std() > 0.1
        overflowed = bn(torch.randn(4 * limit, 512) * spread)
    assert not (torch.isfinite(overflowed).all() and overflowed.std() > 0.1)
    assert largest_safe_batch(MODELS['vgg16']()) > 10 ** 30  # a freshly made model has no such limit
