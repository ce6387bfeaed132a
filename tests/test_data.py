"""helpers/data.py as students and TAs meet it: both layouts, both pipelines, and one line for every folder
that holds something else. Data is made tiny in tmp_path; nothing is ever downloaded."""
import os
import re
import shutil
import struct
import urllib.error
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import accept_batches, make_image_folder, make_torchvision_layout
from helpers import data, fast_path
from helpers.data import CLASSES, TensorLoader, decode, random_crop_flip


@pytest.fixture
def downloads(monkeypatch):
    """Every download attempt's root, each failing as it does without a network."""
    import torchvision
    calls = []

    def offline(self):
        calls.append(str(self.root))
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torchvision.datasets.CIFAR10, 'download', offline)
    return calls


def plain_loaders(root, batch_size=100, train=True):
    """main.py's loaders as the handout writes them, run as written (--plain): image files checked first."""
    def loader(train):
        dataset = data.CIFAR10(root, train, transform=data.assignment_transform(train))
        return fast_path.loader(torch.utils.data.DataLoader(dataset, batch_size, shuffle=train), train, 'cpu',
                                plain=True)
    return loader(True) if train else None, loader(False)


def one_line(call, pattern):
    """The Mistake `call` raises: one line that matches `pattern` (paths written with /, as on Windows too)."""
    with pytest.raises(SystemExit) as e:
        call()
    message = str(e.value.code).replace(os.sep, '/')
    assert message.startswith('error: ') and '\n' not in message, message
    assert re.search(pattern, message), message
    return message


def tiny(tmp_path, train=2, test=3):
    return make_image_folder(tmp_path / 'images', train_per_class=train, test_per_class=test)


@pytest.mark.parametrize('kind', ['folder', 'torchvision'])
def test_both_layouts_give_the_same_test_images_in_both_pipelines(kind, tmp_path, torchvision_root):
    root = tiny(tmp_path) if kind == 'folder' else torchvision_root
    assert data.layout(root) == kind
    images, labels = decode(root, 'test')
    assert images.dtype == torch.uint8 and images.shape == ((30 if kind == 'folder' else 50), 3, 32, 32)
    fast = list(TensorLoader(images, labels, batch_size=7))
    _, test = plain_loaders(root, batch_size=7, train=False)
    plain = list(test)
    assert len(fast) == len(plain)
    for (x, y), (px, py) in zip(fast, plain):
        assert torch.equal(y, py) and torch.allclose(x, px, atol=1e-5)
    train, _ = plain_loaders(root, batch_size=7)
    assert len(train.dataset) == len(decode(root, 'train')[1]) == (20 if kind == 'folder' else 200)


def test_hidden_files_and_folders_are_skipped_and_both_pipelines_list_the_same_images(tmp_path):
    root = tiny(tmp_path)
    cat = tmp_path / 'images' / 'test' / 'cat'
    (cat / 'sub').mkdir()
    Image.new('RGB', (32, 32)).save(cat / 'sub' / 'b.PNG')  # nested, upper-case extension: an image
    (cat / 'notes.txt').write_text('not an image')
    for junk in ('._0000.png', '.DS_Store', '.AppleDouble/0000.png', 'sub/._b.PNG'):
        os.makedirs(os.path.dirname(cat / junk), exist_ok=True)
        (cat / junk).write_bytes(b'\x00\x05\x16\x07 Mac OS X')
    (tmp_path / 'images' / 'test' / '.AppleDouble').mkdir()  # not an eleventh class
    (tmp_path / 'images' / '__MACOSX').mkdir()
    images, labels = decode(root, 'test')
    assert len(labels) == 31 and labels.tolist().count(CLASSES.index('cat')) == 4
    _, test = plain_loaders(root, train=False)
    assert test.dataset.samples == data._samples(root, 'test')  # the same files, in the same order
    assert torch.equal(torch.cat([y for _, y in test]), labels)


def test_crop_flip_draws_torchvisions_crops_and_flips_equally_often():
    import torchvision.transforms as T
    image = torch.arange(3 * 32 * 32, dtype=torch.int32).view(1, 3, 32, 32) + 1
    padded = torch.nn.functional.pad(image[0], (4,) * 4)
    windows = {(oy, ox, f): (lambda w: w.flip(-1) if f else w)(padded[:, oy:oy + 32, ox:ox + 32])
               for oy in range(9) for ox in range(9) for f in (False, True)}

    def key(x):  # the window's offset and flip, from two pixels that are never padding
        (row, col), flipped = divmod(int(x[0, 16, 16]) - 1, 32), bool(x[0, 16, 17] < x[0, 16, 16])
        return row - 12, col - 12 + flipped, flipped
    ours = random_crop_flip(image.repeat(3000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    theirs = torch.stack([transform(image[0]) for _ in range(3000)])
    counts = []
    for batch in (ours, theirs):
        keys = [key(x) for x in batch]
        assert all(torch.equal(x, windows[k]) for x, k in zip(batch[:200], keys))  # each a whole window
        counts.append(np.bincount([oy * 18 + ox * 2 + f for oy, ox, f in keys], minlength=162) / len(keys))
    assert (counts[0] > 0).sum() == (counts[1] > 0).sum() == 162  # every offset, flipped or not
    assert np.abs(counts[0] - counts[1]).max() < 0.01  # ~1/162 each, both
    assert abs(counts[0][1::2].sum() - 0.5) < 0.03


def test_a_last_training_batch_of_one_image_is_dropped_by_the_tensor_loader(tmp_path):
    images, labels = torch.zeros(21, 3, 8, 8, dtype=torch.uint8), torch.arange(21)
    assert [len(y) for _, y in TensorLoader(images, labels, 10, train=True)] == [10, 10]
    assert [len(y) for _, y in TensorLoader(images, labels, 10)] == [10, 10, 1]  # every test image counts


def test_held_out_images_are_the_same_every_time_and_too_many_names_the_flag():
    images = torch.arange(250, dtype=torch.uint8).view(250, 1, 1, 1).expand(250, 3, 32, 32).contiguous()
    (train_x, train_y), (val_x, val_y) = data.hold_out(images, torch.arange(250), 50)
    assert len(val_y) == 50 and not set(train_y.tolist()) & set(val_y.tolist())
    assert torch.equal(data.hold_out(images, torch.arange(250), 50)[1][1], val_y)
    assert torch.equal(val_x[:, 0, 0, 0].long(), val_y)
    one_line(lambda: data.hold_out(images, torch.arange(250), 250), 'leaves none of 250 to train on; give a smaller')


def png(width, height, depth=8, colour=2, pixels=None):
    """A PNG by hand: `pixels` rows (None: no pixel data at all, as a header that lies about its size has)."""
    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    header = chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, 0))
    return b'\x89PNG\r\n\x1a\n' + header + chunk(b'IDAT', zlib.compress(pixels or b'')) + chunk(b'IEND', b'')


def save(path, make):
    if isinstance(make, bytes):
        path.write_bytes(make)
    else:
        Image.fromarray(make).save(path) if isinstance(make, np.ndarray) else Image.new(make, (32, 32)).save(path)


@pytest.mark.parametrize('name, make, why', [
    ('big.png', np.zeros((64, 48, 3), np.uint8), r'is 48x64, not 32x32; .*: resize it or delete it'),
    ('gray.png', 'L', r'is grayscale \(L\), not RGB; .*convert it'),
    ('gray.png', '1', r'is grayscale \(1\)'),
    ('deep.tif', np.full((32, 32), 1000, np.uint16), r'has I;16 pixels of more than 8 bits'),
    ('float.tif', np.full((32, 32), 0.5, np.float32), r'has F pixels of more than 8 bits'),
    ('rgb48.png', png(32, 32, depth=16, pixels=b''.join(b'\0' + b'\x12\x34' * 96 for _ in range(32))),
     r'has RGB pixels of more than 8 bits'),
    ('bomb.png', png(100000, 100000), r'cannot be read \(.*decompression bomb'),
    ('bomb.png', png(10000, 10000), r'cannot be read \(.*decompression bomb'),  # PIL's warning: refused too
    ('lies.png', png(64, 64), r'is 64x64'),  # no pixel data at all: refused from its header, never decoded
    ('broken.png', b'not a png', r'cannot be read \(cannot identify image file'),
])
def test_an_image_that_is_not_32x32_8_bit_rgb_is_refused_in_both_pipelines(tmp_path, name, make, why):
    root = tiny(tmp_path, train=1, test=1)
    save(tmp_path / 'images' / 'test' / 'dog' / name, make)
    for read in (lambda: decode(root, 'test'), lambda: plain_loaders(root)):
        one_line(read, rf"^error: image .*dog.{re.escape(name)} {why}")


def test_palette_and_rgba_images_are_read_as_rgb(tmp_path):
    root = tiny(tmp_path, train=1, test=1)
    for mode, name in (('P', 'p.png'), ('RGBA', 'rgba.png'), ('CMYK', 'cmyk.jpg')):
        Image.new(mode, (32, 32)).save(tmp_path / 'images' / 'test' / 'dog' / name)
    assert decode(root, 'test')[0].shape == (13, 3, 32, 32)


def test_bad_images_are_collected_into_one_line_with_a_count(tmp_path):
    root = tiny(tmp_path, train=1, test=3)
    for c in CLASSES[2:]:  # the folder resized as a whole, and one file that is not an image
        for j in range(3):
            save(tmp_path / 'images' / 'test' / c / f'{j:04d}.png', np.zeros((64, 64, 3), np.uint8))
    save(tmp_path / 'images' / 'test' / 'airplane' / 'x.png', b'not a png')
    message = r'^error: image .*airplane.x\.png cannot be read .* \(and 24 more images not usable\); .* them$'
    one_line(lambda: decode(root, 'test'), message)
    one_line(lambda: plain_loaders(root), message)


@pytest.mark.parametrize('change, message', [
    (lambda split: (split / 'truck').rename(split / 'lorry'),
     r"test must hold a folder for each of CIFAR-10's ten class names, lower case .*; missing or empty: truck; "
     r"not CIFAR-10: lorry$"),
    (lambda split: [f.unlink() for f in (split / 'frog').iterdir()], r'missing or empty: frog; not CIFAR-10: none$'),
    (lambda split: shutil.rmtree(split), r'images holds CIFAR-10 class folders in train/: add test/ with its ten'),
])
def test_an_image_folder_whose_split_is_wrong_names_what_is_wrong(tmp_path, change, message):
    root = tiny(tmp_path, train=1, test=1)
    change(tmp_path / 'images' / 'test')
    for read in (lambda: decode(root, 'test'), lambda: plain_loaders(root)):
        one_line(read, message)


def test_an_unreadable_folder_is_named_in_one_line(tmp_path, monkeypatch):
    root = tiny(tmp_path, train=1, test=1)
    scandir = os.scandir  # the tests run as root, whom chmod 000 does not stop: the listing fails instead

    def refuse(bad):
        def listing(path):
            if os.path.normpath(path) == os.path.normpath(os.path.join(root, bad)):
                raise PermissionError(13, 'Permission denied', path)
            return scandir(path)
        return listing
    for folder in ('test', 'test/cat'):
        monkeypatch.setattr(os, 'scandir', refuse(folder))
        one_line(lambda: decode(root, 'test'), rf'^error: cannot read folder .*{folder} \(Permission denied\)')


def test_a_stray_empty_split_folder_does_not_hide_the_batches(torchvision_root, tmp_path, downloads):
    root = shutil.copytree(torchvision_root, tmp_path / 'tv')
    (root / 'train' / 'notes').mkdir(parents=True)
    (root / 'test').mkdir()
    assert data.layout(root) == 'torchvision' and decode(root, 'test')[0].shape == (50, 3, 32, 32)
    (root / 'cifar-10-batches-py').rename(root / 'cifar10')
    one_line(lambda: decode(root, 'test'), "cifar10 holds CIFAR-10's batches, which torchvision reads from "
                                           ".*tv/cifar-10-batches-py: rename that folder$")
    assert downloads == []


def test_batch_files_that_are_not_cifar10s_originals_are_refused_unread(torchvision_root, tmp_path, monkeypatch):
    root = shutil.copytree(torchvision_root, tmp_path / 'tv')
    batch = root / 'cifar-10-batches-py' / 'data_batch_3'
    batch.write_bytes(batch.read_bytes()[:-1] + b'\0')  # one byte changed: its MD5 is not the original's
    monkeypatch.setattr('pickle.load', lambda *a, **k: pytest.fail('unpickled a file that failed its MD5 check'))
    for read in (lambda: decode(root, 'test'), lambda: plain_loaders(root)):
        one_line(read, r"cifar-10-batches-py does not hold CIFAR-10's original files \(one is missing, damaged, or "
                       r"re-saved by another program\); delete it and run again to download them$")
    batch.unlink()
    one_line(lambda: decode(root, 'train'), r"does not hold CIFAR-10's original files \(one is missing")


def make(root, entries):
    """Files (names) and folders (names ending in /) under root, with empty files: names are all that count."""
    root.mkdir(parents=True, exist_ok=True)
    for name in entries:
        os.makedirs(root / os.path.dirname(name.rstrip('/')), exist_ok=True)
        (root / name).mkdir() if name.endswith('/') else (root / name).write_bytes(b'')
    return root


SPLITS = [f'{s}/{c}/0.png' for s in ('training', 'testing') for c in CLASSES]


@pytest.mark.parametrize('entries, data_dir, message', [
    (['cifar10/data_batch_1', 'cifar10/test_batch', 'train/'], '',
     r"d/cifar10 holds CIFAR-10's batches, which torchvision reads from .*d/cifar-10-batches-py: rename that folder$"),
    (['cifar-10-batches-py/data_batch_1', 'cifar-10-batches-py/test_batch'], 'cifar-10-batches-py',
     r"d/cifar-10-batches-py holds CIFAR-10's batches, which torchvision reads from .*: pass --data .*/d$"),
    (['x/cifar-10-batches-py/data_batch_1', 'x/cifar-10-batches-py/test_batch', 'notes.txt'], '',
     r"d/x/cifar-10-batches-py holds CIFAR-10's batches, .*: pass --data .*d/x$"),
    (['x/batches/data_batch_1', 'x/batches/test_batch'], '', r'rename that folder and pass --data .*d/x$'),
    (SPLITS, '', r'd holds CIFAR-10 class folders in testing/, training/: rename training/ to train/ and rename '
                 r'testing/ to test/$'),
    ([f'cifar/{s}/{c}/' for s in ('train', 'test') for c in CLASSES], '',
     r'd/cifar holds CIFAR-10 class folders in test/, train/: pass --data .*d/cifar$'),
    ([f'test/{c}/' for c in CLASSES], 'test', r'd/test holds class folders \(airplane, automobile, bird, \.\.\.\): it '
                                              r'is one split of an image folder; pass --data .*/d, which should hold'),
    (['trainLabels.csv', 'train/1.png', 'test/1.png'], '', r"d is Kaggle's CIFAR-10, whose test images have no labels"),
    (['trainLabels.csv', 'train/1.png', 'test/1.png'], 'train', r"d is Kaggle's CIFAR-10"),  # one level too deep
    (['plain_text/train-00000-of-00001.parquet', 'plain_text/test-00000-of-00001.parquet', 'README.md'], '',
     r"d/plain_text holds Hugging Face's uoft-cs/cifar10 .* give --data an empty folder and it is downloaded"),
    (['dataset_dict.json', 'train/data-00000-of-00001.arrow', 'train/state.json'], '', "d holds Hugging Face's"),
    (['cifar-10-batches-bin/data_batch_1.bin', 'cifar-10-batches-bin/test_batch.bin'], '', "d holds CIFAR-10's binary"),
    (['cifar-100-python/train', 'cifar-100-python/test', 'cifar-100-python/meta'], '', 'd holds CIFAR-100; get'),
    (['cifar-100-python/train', 'cifar-100-python/test', 'cifar-100-python/meta'], 'cifar-100-python', 'CIFAR-100'),
    (['cifar-10-python (1).tar.gz'], '', r"d holds CIFAR-10's archive cifar-10-python \(1\)\.tar\.gz, not unpacked: "
                                         r"unpack it into .*d, or move it to .*d/cifar-10-python\.tar\.gz and run"),
    (['train/1.png', 'train/2.png', 'train/3.png', 'notes.txt'], '',
     r'd holds train/ \(folders: none; 3 files\), notes\.txt; put CIFAR-10 there: .* or an image folder'),
])
def test_a_folder_that_holds_something_else_says_what_to_do_without_downloading(
        tmp_path, downloads, entries, data_dir, message):
    root = make(tmp_path / 'd', entries) / data_dir
    for read in (lambda: decode(root, 'test'), lambda: plain_loaders(root)):
        one_line(read, message)
    assert downloads == []


def test_data_that_is_missing_empty_or_a_file_is_one_line_and_downloads_nothing(tmp_path, downloads):
    one_line(lambda: decode(tmp_path / 'typo', 'test'), r'^error: data folder not found: .*typo')
    one_line(lambda: decode('', 'test'), r"^error: data folder not found: ''")
    (tmp_path / 'cifar.tar.gz').write_bytes(b'an archive')
    one_line(lambda: decode(tmp_path / 'cifar.tar.gz', 'test'), r'cifar\.tar\.gz is a file; give the folder')
    assert downloads == [] and not (tmp_path / 'typo').exists()


@pytest.mark.parametrize('there', [[], ['README.md'], ['cifar-10-python.tar.gz']])
def test_download_only_into_an_existing_folder_where_nothing_is_recognized(tmp_path, downloads, there):
    root = make(tmp_path / 'data', there)
    left = r'.*cifar-10-python\.tar\.gz there is incomplete or damaged: delete it; ' * bool(there and 'tar' in there[0])
    one_line(lambda: decode(root, 'train'), r'^error: no CIFAR-10 in .*data and it could not be downloaded \(\[Errno '
                                            rf'-3\] Temporary failure [^)]*\); {left}put CIFAR-10 there: .* folder')
    assert downloads == [str(root)]


def test_batches_with_other_md5s_than_cifar10s_are_refused_until_the_tests_accept_them(tmp_path, monkeypatch):
    root = make_torchvision_layout(tmp_path, train_per_batch=3, test=4)
    one_line(lambda: decode(root, 'test'), "does not hold CIFAR-10's original files")
    accept_batches(monkeypatch, root)
    assert decode(root, 'train')[1].shape == (15,)


def test_a_link_back_up_inside_a_class_folder_counts_each_image_once(tmp_path):
    root = tiny(tmp_path)
    os.symlink('.', tmp_path / 'images' / 'test' / 'cat' / 'again')  # a loop: test/cat/again/again/...
    images, labels = decode(root, 'test')
    assert len(labels) == 30 and len(data.CIFAR10(root, train=False)) == 30


def test_no_download_into_a_folder_of_other_files_like_the_project_or_home(tmp_path, downloads):
    root = make(tmp_path / 'project', ['main.py', 'helpers/', 'notes.txt'])
    one_line(lambda: decode(root, 'test'), r'^error: no CIFAR-10 in .*project, which holds other files \(helpers, '
                                           r'main\.py, notes\.txt\): it is downloaded only into an empty folder')
    assert downloads == []


def test_class_folders_in_capitals_are_told_the_lower_case_names(tmp_path):
    root = tiny(tmp_path, train=1, test=1)
    for split in ('train', 'test'):
        for c in CLASSES:
            os.rename(tmp_path / 'images' / split / c, tmp_path / 'images' / split / (c.title() + '_'))
    one_line(lambda: decode(root, 'test'), r"CIFAR-10's ten class names, lower case \(airplane, automobile, \.\.\., "
                                           r"truck\)")
