"""Fixtures: small CIFAR-10-shaped data made here and checkpoints of both models.
Nothing is downloaded. Running the scripts is tests/scripts.py's."""
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from helpers.data import CLASSES  # noqa: E402
from helpers.model_table import MODELS  # noqa: E402


def make_image_folder(root, train_per_class=30, test_per_class=10, seed=0):
    """An image folder whose classes differ in colour, so a model can learn them."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', train_per_class), ('test', test_per_class)):
        for i, c in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for j in range(n):
                a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                a[..., i % 3] = 25 * i
                Image.fromarray(a).save(os.path.join(root, split, c, f'{j:04d}.png'))
    return str(root)


def make_torchvision_layout(root, train_per_batch=40, test=50, seed=1):
    """DIR/cifar-10-batches-py with the same files and pickles as the real archive."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(d, exist_ok=True)

    def dump(name, n):
        with open(os.path.join(d, name), 'wb') as f:
            pickle.dump({'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         'labels': rng.integers(0, 10, n).tolist()}, f)
    for i in range(1, 6):
        dump(f'data_batch_{i}', train_per_batch)
    dump('test_batch', test)
    with open(os.path.join(d, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': list(CLASSES)}, f)
    return str(root)


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('folder'))


@pytest.fixture(scope='session')
def torchvision_root(tmp_path_factory):
    return make_torchvision_layout(tmp_path_factory.mktemp('tv'))


@pytest.fixture(scope='session')
def checkpoints(tmp_path_factory):
    """{'resnet50': path, 'vgg16': path} of freshly initialised models."""
    d = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for name, build in MODELS.items():
        torch.manual_seed(0)
        paths[name] = str(d / f'{name}.ckpt')
        torch.save(build().state_dict(), paths[name])
    return paths
