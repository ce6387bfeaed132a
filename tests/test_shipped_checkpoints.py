"""The checkpoints in checkpoints/ are what SHA256SUMS says, load as the assignment loads them, and are scaled
for main.py's Adam epoch."""
import copy
import functools
import hashlib
import os

import pytest
import torch

from conftest import ROOT
from helpers.checkpoints import MODELS, PRETRAINED
from helpers.weight_scaling import largest_safe_batch, looks_scaled


@functools.lru_cache(maxsize=None)
def shipped(name):
    """The shipped checkpoint of `name`, loaded with the assignment's own line (strict)."""
    model = MODELS[name]()
    model.load_state_dict(torch.load(os.path.join(ROOT, PRETRAINED[name]), weights_only=True))
    return model.eval()


def test_every_shipped_checkpoint_matches_its_line_in_sha256sums():
    with open(os.path.join(ROOT, 'checkpoints', 'SHA256SUMS'), encoding='utf-8') as f:
        listed = dict(reversed(line.split()) for line in f if line.strip())
    assert sorted(listed) == sorted(os.path.basename(path) for path in PRETRAINED.values())
    for name, digest in listed.items():
        with open(os.path.join(ROOT, 'checkpoints', name), 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


@pytest.mark.parametrize('name', sorted(MODELS))
def test_a_shipped_checkpoint_loads_strictly_and_is_scaled_for_the_adam_epoch(name):
    state = torch.load(os.path.join(ROOT, PRETRAINED[name]), weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in state.items() if 'running_' in k)
    assert all(torch.isfinite(v).all() for v in shipped(name).state_dict().values() if v.is_floating_point())
    assert looks_scaled(shipped(name))
    assert largest_safe_batch(shipped(name)) >= 100  # main.py's batch of 100 fine-tunes it


def test_the_largest_safe_batch_is_where_the_scaled_vgg16_head_would_overflow():
    limit = largest_safe_batch(shipped('vgg16'))
    assert limit < 100000 and largest_safe_batch(MODELS['vgg16']()) > 10 ** 30  # a fresh model has no such limit
    bn = copy.deepcopy(shipped('vgg16').classifier[2]).train()  # fed batches of its running variance
    spread = bn.running_var.sqrt()
    torch.manual_seed(0)
    with torch.no_grad():
        fine, overflowed = (bn(torch.randn(n, 512) * spread) for n in (limit, 4 * limit))
    assert torch.isfinite(fine).all() and fine.std() > 0.1
    assert not (torch.isfinite(overflowed).all() and overflowed.std() > 0.1)
