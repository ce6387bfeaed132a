"""The fast data path gives what the assignment's transforms give."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import cifar10
from cifar10 import CLASSES, DataError, TensorLoader, decode, random_crop_flip


def test_crop_flip_is_a_window_of_the_zero_padded_image_and_covers_every_offset():
    n = 4000
    images = torch.arange(3 * 32 * 32, dtype=torch.int32).view(1, 3, 32, 32).repeat(n, 1, 1, 1) + 1
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, generator=g)
    padded = torch.nn.functional.pad(images[0], (4, 4, 4, 4))
    windows = {}
    for oy in range(9):
        for ox in range(9):
            w = padded[:, oy:oy + 32, ox:ox + 32]
            windows[(oy, ox, False)] = w
            windows[(oy, ox, True)] = w.flip(-1)
    seen = set()
    for img in out[:400]:
        match = [k for k, w in windows.items() if torch.equal(img, w)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 140  # 162 possible
    # flips are fair coins, offsets uniform over 0..8
    first = out[:, 0, :, :]
    flipped = torch.tensor([not any(torch.equal(first[i], windows[(oy, ox, False)][0])
                                    for oy in range(9) for ox in range(9)) for i in range(400)])
    assert 0.4 < flipped.float().mean() < 0.6


def test_test_batches_equal_torchvisions_transform(image_folder):
    images, labels = decode(image_folder, 'test')
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32)
    assert labels.tolist() == sorted(labels.tolist()) and set(labels.tolist()) == set(range(10))
    x, y = next(iter(TensorLoader(images, labels, batch_size=100)))
    path = os.path.join(image_folder, 'test', CLASSES[int(y[7])], '0007.png')
    expected = cifar10.transform_test(Image.open(path).convert('RGB'))
    assert torch.allclose(x[7], expected, atol=1e-5)


def test_train_loader_shuffles_each_epoch_and_sees_every_image_once():
    images = torch.arange(250, dtype=torch.uint8).view(250, 1, 1, 1).expand(250, 3, 32, 32).contiguous()
    labels = torch.arange(250)
    loader = TensorLoader(images, labels, batch_size=100, train=True, seed=0)
    epochs = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert len(loader) == 3 and [len(y) for _, y in loader] == [100, 100, 50]
    assert sorted(epochs[0].tolist()) == list(range(250)) and not torch.equal(epochs[0], epochs[1])
    shards = [TensorLoader(images, labels, 100, train=True, seed=0, rank=r, world=2) for r in range(2)]
    seen = torch.cat([y for s in shards for _, y in s])
    assert sorted(seen.tolist()) == list(range(250))


def test_torchvision_layout_decodes(torchvision_root):
    images, labels = decode(torchvision_root, 'train')
    assert images.shape == (200, 3, 32, 32) and labels.shape == (200,)
    train, test = cifar10.datasets(torchvision_root, download=False)
    assert len(train) == 200 and len(test) == 50 and train[0][0].shape == (3, 32, 32)


def test_class_folders_must_be_cifar10s(tmp_path):
    for split in ('train', 'test'):
        for c in list(CLASSES[:9]) + ['cats']:
            os.makedirs(tmp_path / split / c)
    with pytest.raises(DataError, match='missing: truck; not CIFAR-10: cats'):
        decode(str(tmp_path), 'train')
    with pytest.raises(DataError, match='missing: truck'):
        cifar10.datasets(str(tmp_path))


def test_unreadable_or_wrong_size_image_is_named(tmp_path):
    for c in CLASSES:
        os.makedirs(tmp_path / 'test' / c)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / 'test' / c / 'a.png')
    (tmp_path / 'test' / 'dog' / 'b.png').write_bytes(b'not a png')
    with pytest.raises(DataError, match=r'cannot read image .*dog.b\.png'):
        decode(str(tmp_path), 'test')
    (tmp_path / 'test' / 'dog' / 'b.png').unlink()
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(tmp_path / 'test' / 'cat' / 'big.png')
    with pytest.raises(DataError, match=r'big\.png is 32x40'):
        decode(str(tmp_path), 'test')


def test_empty_directory_without_network_says_what_to_put_there(tmp_path):
    with pytest.raises(DataError, match='cifar-10-python.tar.gz.*image folder'):
        decode(str(tmp_path), 'train', download=False)
