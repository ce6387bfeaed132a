"""The fast data path gives what the assignment's transforms give."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import data
from helpers.data import CLASSES, DataError, TensorLoader, cutout, decode, random_crop_flip


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


def test_cutout_blanks_one_square_per_image_the_same_in_every_channel():
    n, size = 2000, 8
    images = torch.rand(n, 3, 32, 32) + 1  # nothing is 0 before
    out = cutout(images, size, generator=torch.Generator().manual_seed(0))
    blank = out == 0
    assert torch.equal(out[~blank], images[~blank])
    assert (blank == blank[:, :1]).all()
    rows, cols = blank[:, 0].any(2), blank[:, 0].any(1)
    heights, widths = rows.sum(1), cols.sum(1)
    # the blanked pixels are exactly the rectangle of the rows and columns they touch, at most size x size
    assert torch.equal(blank[:, 0], rows[:, :, None] & cols[:, None, :])
    assert heights.max() == widths.max() == size and heights.min() >= size // 2
    assert 0.4 < ((heights == size) & (widths == size)).float().mean() < 0.8  # whole when away from the edges
    assert blank[:, 0, 0].any() and blank[:, 0, -1].any() and blank[:, 0, :, 0].any() and blank[:, 0, :, -1].any()


def test_the_train_loader_applies_cutout_after_the_same_crop_and_flip():
    images = torch.randint(1, 255, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100)
    plain, cut = (next(iter(TensorLoader(images, labels, 100, train=True, seed=0, cutout=c))) for c in (0, 12))
    assert torch.equal(plain[1], cut[1])
    blank = cut[0] == 0
    assert blank.any(0).any() and (blank.flatten(1).sum(1) > 0).all()
    assert torch.equal(cut[0][~blank], plain[0][~blank])
    test = TensorLoader(images, labels, 100, cutout=12)  # never on test batches
    assert not (next(iter(test))[0] == 0).any()


def test_test_batches_equal_torchvisions_transform(image_folder):
    images, labels = decode(image_folder, 'test')
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32)
    assert labels.tolist() == sorted(labels.tolist()) and set(labels.tolist()) == set(range(10))
    x, y = next(iter(TensorLoader(images, labels, batch_size=100)))
    path = os.path.join(image_folder, 'test', CLASSES[int(y[7])], '0007.png')
    expected = data.assignment_transforms()[1](Image.open(path).convert('RGB'))
    assert torch.allclose(x[7], expected, atol=1e-5)


def test_the_fast_path_lists_an_image_folder_as_torchvisions_imagefolder_does(tmp_path):
    # the same order in both pipelines: a seed then shuffles the same images; torchvision is not imported for it
    import torchvision
    assert data.IMAGE_EXTENSIONS == torchvision.datasets.folder.IMG_EXTENSIONS
    root = tmp_path / 'train'
    for c in CLASSES:  # listing reads names only: empty files will do
        for name in ('b.png', 'a.JPG', '10.png', '9.png', 'notes.txt', 'sub/z.png', 'sub/deeper/a.bmp', 'Sub/x.png'):
            os.makedirs(os.path.dirname(root / c / name), exist_ok=True)
            (root / c / name).write_bytes(b'')
    folder = torchvision.datasets.ImageFolder(str(root))
    assert data.image_files(str(root)) == folder.samples and len(folder.samples) == 70


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
    train, test = data.datasets(torchvision_root, download=False)
    assert len(train) == 200 and len(test) == 50 and train[0][0].shape == (3, 32, 32)


def test_class_folders_must_be_cifar10s(tmp_path):
    for split in ('train', 'test'):
        for c in list(CLASSES[:9]) + ['cats']:
            os.makedirs(tmp_path / split / c)
    with pytest.raises(DataError, match='missing: truck; not CIFAR-10: cats'):
        decode(str(tmp_path), 'train')
    with pytest.raises(DataError, match='missing: truck'):
        data.datasets(str(tmp_path))


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
    (tmp_path / 'cifar.tar.gz').write_bytes(b'an archive, not a folder')
    with pytest.raises(DataError, match=r'--data .*cifar\.tar\.gz is a file; give the folder'):
        decode(str(tmp_path / 'cifar.tar.gz'), 'train')


def test_every_rank_takes_the_same_number_of_steps():
    # 251 images over 2 ranks at batch 50: uneven shares would give one rank 126 images (3 batches)
    # and the other 125 (3 batches, but a different last size) - and at batch 25, 6 against 5 batches
    images = torch.zeros(251, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(251)
    for batch in (25, 50):
        shards = [TensorLoader(images, labels, batch, train=True, seed=0, rank=r, world=2) for r in range(2)]
        sizes = [[len(y) for _, y in s] for s in shards]
        assert sizes[0] == sizes[1] and len(shards[0]) == len(sizes[0]) == len(shards[1])
        seen = torch.cat([y for s in shards for _, y in s])
        assert len(set(seen.tolist())) == len(seen) == 250  # one image sits out, none twice


def test_a_last_training_batch_of_one_image_is_dropped():
    images = torch.zeros(201, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(201)
    train = TensorLoader(images, labels, 100, train=True, seed=0)
    assert len(train) == 2 and [len(y) for _, y in train] == [100, 100]
    test = TensorLoader(images, labels, 100)
    assert [len(y) for _, y in test] == [100, 100, 1]  # every test image still counts


def test_held_out_images_are_the_same_every_time_and_never_trained_on():
    images = torch.arange(250, dtype=torch.uint8).view(250, 1, 1, 1).expand(250, 3, 32, 32).contiguous()
    labels = torch.arange(250)
    (train_x, train_y), (val_x, val_y) = data.hold_out(images, labels, 50)
    assert len(val_y) == 50 and len(train_y) == 200
    assert not set(train_y.tolist()) & set(val_y.tolist())
    assert torch.equal(data.hold_out(images, labels, 50)[1][1], val_y)
    assert torch.equal(val_x[:, 0, 0, 0].long(), val_y)  # images stay with their labels
    with pytest.raises(DataError, match='leaves none to train on'):
        data.hold_out(images, labels, 250)


def test_an_empty_class_folder_is_one_clear_error(tmp_path):
    for c in CLASSES:
        os.makedirs(tmp_path / 'train' / c)
        if c != 'frog':
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / 'train' / c / 'a.png')
    with pytest.raises(DataError, match=r'class folder\(s\) frog hold no images'):
        decode(str(tmp_path), 'train')
    with pytest.raises(DataError, match=r'class folder\(s\) frog hold no images'):
        data.datasets(str(tmp_path))


def test_a_missing_or_damaged_batch_file_is_named(torchvision_root, tmp_path):
    import shutil
    root = tmp_path / 'tv'
    shutil.copytree(torchvision_root, root)
    batch = root / 'cifar-10-batches-py' / 'data_batch_3'
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match=r'data_batch_3 is damaged.*delete .*cifar-10-batches-py'):
        decode(str(root), 'train')
    batch.unlink()
    with pytest.raises(DataError, match=r'data_batch_3 is missing'):
        decode(str(root), 'train')
    assert decode(str(root), 'test')[0].shape == (50, 3, 32, 32)  # the test split does not need it
