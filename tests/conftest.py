"""Fixtures: small CIFAR-10-shaped data made here and checkpoints of both models.
Nothing is downloaded. Running the scripts is tests/scripts.py's."""
import hashlib
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
from helpers.checkpoints import MODELS  # noqa: E402


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
    """DIR/cifar-10-batches-py with the same files and pickles as the real archive, but not its MD5s, which
    torchvision's CIFAR10 checks: `accept_batches` makes it take these."""
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


def accept_batches(monkeypatch, root):
    """torchvision's CIFAR10 made to expect the MD5s of the batch files now at `root` (a test's tiny ones)."""
    from torchvision.datasets import CIFAR10

    def md5(name):
        with open(os.path.join(root, 'cifar-10-batches-py', name), 'rb') as f:
            return hashlib.md5(f.read()).hexdigest()
    monkeypatch.setattr(CIFAR10, 'train_list', [[name, md5(name)] for name, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, 'test_list', [[name, md5(name)] for name, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, 'meta', {**CIFAR10.meta, 'md5': md5(CIFAR10.meta['filename'])})
    return str(root)


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('folder'))


@pytest.fixture(scope='session')
def torchvision_files(tmp_path_factory):
    return make_torchvision_layout(tmp_path_factory.mktemp('tv'))


@pytest.fixture
def torchvision_root(torchvision_files, monkeypatch):
    """A tiny torchvision layout (200 training, 50 test images) that torchvision's CIFAR10 accepts."""
    return accept_batches(monkeypatch, torchvision_files)


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


def symlink_or_skip(target, link):
    """A symlink at `link` to the folder `target`, or a skip where this machine makes none that Python follows
    (Windows without Developer Mode refuses; Wine pretends): tried, not guessed from the OS's name."""
    try:
        os.symlink(target, link, target_is_directory=True)
    except (OSError, NotImplementedError) as e:
        pytest.skip(f'this machine makes no symlinks ({e})')
    if not (os.path.islink(link) and os.path.samefile(os.path.realpath(link), target)):
        pytest.skip('this machine makes symlinks that Python does not follow (Wine)')
    return link
