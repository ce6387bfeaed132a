"""CIFAR-10 for main.py, train.py and the tests: all data loading is here.

Two layouts are accepted under a data directory DIR:
  * torchvision's: DIR/cifar-10-batches-py (downloaded there on first use, as
    the assignment does);
  * an image folder: DIR/train/<class>/* and DIR/test/<class>/*, with exactly
    CIFAR-10's ten class folders (how offline and Kaggle/PNG copies come).

`plain_loaders` is the assignment's pipeline (PIL transforms per image, batch
100, no workers). `tensor_loaders` (`decode` + `TensorLoader`) is the fast
path: every image is decoded once into one uint8 tensor, and the same random
crop (zero padding 4) and horizontal flip are applied to whole batches on the
chosen device.

A training batch of a single image is dropped (a last batch of one, say 45,001
images at batch 100): BatchNorm cannot train on one image.

What is refused, each in one line (a DataError) that names the file or folder:
  * batch files whose pickle names anything but numpy's array rebuilding (a
    pickle can call any function: such a file is refused, never run), or whose
    contents are not CIFAR-10's (no images, 'data' not N x 3072 values 0-255,
    labels not whole numbers 0-9, or not one per image);
  * unreadable folders and images; images other than 32x32 (the size is read
    from the file's header, before any decoding: a small file cannot make a
    huge image); 16-bit and floating-point images (CIFAR-10 is 8-bit RGB, and
    converting would silently drop precision); grayscale images;
  * in the plain pipeline, the test split's bad images before training (their
    headers are read when its dataset is made), as the fast path decodes them.
Symlinked folders are followed, but each real folder is listed once: a link
loop neither repeats images nor hangs. Hidden files and folders ('.' names:
macOS's ._* and .DS_Store) are not images and are skipped.
"""
import math
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import paths
from helpers.errors import DataError

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer',
           'dog', 'frog', 'horse', 'ship', 'truck')
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
TORCHVISION_FOLDER = 'cifar-10-batches-py'
# torchvision's IMG_EXTENSIONS. torchvision itself is imported only where it is
# used (the plain pipeline, the download): importing it costs 2-3 s of start-up
# on a 2-core CPU, which every run of main.py and train.py paid for nothing.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def assignment_transforms():
    """The assignment's (train, test) PIL transforms."""
    import torchvision.transforms as transforms
    transform_train = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    transform_test = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    return transform_train, transform_test


WHAT_TO_PUT = ("put CIFAR-10 there: torchvision's archive (cifar-10-python.tar.gz, "
               "unpacked as {d}/cifar-10-batches-py) or an image folder "
               "{d}/train/<class>/ and {d}/test/<class>/ with the ten CIFAR-10 classes")


def layout(root):
    """'folder' or 'torchvision' for a data directory that holds CIFAR-10, else None."""
    splits = [os.path.join(root, s) for s in ('train', 'test') if os.path.isdir(os.path.join(root, s))]
    if os.path.isdir(os.path.join(root, TORCHVISION_FOLDER)):
        # a stray train/ or test/ beside the batches (an empty one, say) holds no class folder: not an image folder
        if not any(os.path.isdir(os.path.join(s, c)) for s in splits for c in CLASSES):
            return 'torchvision'
    return 'folder' if splits else None


def _hidden(name):
    """Files and folders whose names start with '.': macOS leaves an AppleDouble '._NAME' beside every file it
    copies onto exFAT, FAT or SMB (and a .DS_Store in each folder); they are not images, nor classes."""
    return name.startswith('.')


def _cannot_read(folder, e):
    return DataError(f"cannot read folder {folder} ({e.strerror or e}); make it readable "
                     "(chmod -R u+rX) or point --data elsewhere")


def _listdir(folder):
    """os.listdir, with an unreadable folder as one line instead of a traceback."""
    try:
        return os.listdir(folder)
    except OSError as e:
        raise _cannot_read(folder, e) from None


def _split_dir(root, split):
    d = os.path.join(root, split)
    if not os.path.isdir(d):
        raise DataError(f"image folder {root} has no '{split}' folder: " + WHAT_TO_PUT.format(d=root))
    found = sorted(e for e in _listdir(d) if not _hidden(e) and os.path.isdir(os.path.join(d, e)))
    if found != sorted(CLASSES):
        missing = sorted(set(CLASSES) - set(found))
        extra = sorted(set(found) - set(CLASSES))
        raise DataError(f"{d} must hold exactly CIFAR-10's ten class folders "
                        f"({', '.join(CLASSES)}); missing: {', '.join(missing) or 'none'}; "
                        f"not CIFAR-10: {', '.join(extra) or 'none'}")
    empty = [c for c in CLASSES if not any(_is_image_name(e) for e in _listdir(os.path.join(d, c)))]
    if empty:
        raise DataError(f"{d}: class folder(s) {', '.join(empty)} hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); put that class's images there")
    return d


def _is_image_name(name):
    return not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(split_dir):
    """[(path, class index)] in torchvision ImageFolder's order (sorted classes, walk, names), so that a
    seed shuffles the same images the same way in the fast and the plain pipeline; hidden files and
    folders (macOS's) are left out, which ImageFolder does not do."""
    samples = []
    for label, name in enumerate(CLASSES):  # CLASSES is in sorted order, as ImageFolder numbers them
        for folder, names in sorted(_walk_once(os.path.join(split_dir, name))):
            samples += [(os.path.join(folder, n), label) for n in sorted(names) if _is_image_name(n)]
    return samples


def _walk_once(top):
    """(folder, file names) under `top`, following symlinked folders but entering each real folder once.

    os.walk(followlinks=True) alone enters a link loop again and again (each
    loop repeats the class's images; two hang the listing), and says nothing
    about a folder it cannot read."""
    def unreadable(e):
        raise _cannot_read(e.filename, e)
    seen = set()
    for folder, dirs, names in os.walk(top, followlinks=True, onerror=unreadable):
        real = os.path.realpath(folder)
        if real in seen:  # reached again through a link: its files are listed already
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not _hidden(d)]  # e.g. a netatalk share's .AppleDouble, named like the images
        # the first way to a folder is the one listed: real folders before links, then by name, so that
        # a folder beside a link to it is listed by its own path, and the same on every machine
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        yield folder, names


class ImageFiles(torch.utils.data.Dataset):
    """The plain pipeline's dataset of an image folder: what torchvision's ImageFolder gives (same order,
    same labels), listed by image_files, so that its checks hold in both pipelines. check=True reads every
    image's header (size, depth, colour) at once rather than when the image is first used."""

    def __init__(self, split_dir, transform=None, check=False):
        self.samples, self.transform = image_files(split_dir), transform
        for path, _ in self.samples if check else ():
            _read_image(path, decode=False)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        image = _read_image(path)
        return (self.transform(image) if self.transform else image), label


def _read_image(path, decode=True):
    """One 32x32 RGB image as a PIL image, or a DataError naming the file; decode=False checks only its
    header (returns None)."""
    try:
        # PIL warns of (and over twice its limit refuses) a header that claims a huge image: an error here
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as im:
                # Image.open has read only the header: refuse a wrong size or depth before decoding anything
                _check_header(path, im)
                return im.convert('RGB') if decode else None  # palette and RGBA images are colour too
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {path} claims to be huge (PIL refuses it as a decompression bomb), "
                        "CIFAR-10 images are 32x32; delete or replace that file") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path} ({e}); delete or replace that file") from None


# Decoding 45,000 JPEGs takes ~9 s on one core; worker processes (not threads: PIL holds the GIL for
# small images) cut that where there are cores to spare, but cost ~0.5 s to start, which a split of
# 5,000 images does not win back (measured: docs/speed.md). Linux only: fork starts them at once.
PARALLEL_DECODE_FROM = 10000


def _read_chunk(paths):
    return np.stack([np.asarray(_read_image(path)) for path in paths])


def _ignore_interrupt():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _read_pixels(paths):
    """The images at `paths` as one uint8 array N x 32 x 32 x 3 (a DataError names a bad file)."""
    workers = min(len(os.sched_getaffinity(0)), 8) if sys.platform == 'linux' else 1
    if workers < 2 or len(paths) < PARALLEL_DECODE_FROM:
        return _read_chunk(paths)
    chunks = [list(c) for c in np.array_split(np.array(paths, dtype=object), 4 * workers) if len(c)]
    with multiprocessing.get_context('fork').Pool(workers, initializer=_ignore_interrupt) as pool:
        return np.concatenate(pool.map(_read_chunk, chunks))


GRAYSCALE_MODES = ('1', 'L', 'LA', 'La')


def _check_header(path, im):
    if im.size != (32, 32):
        size = f'{im.size[0]}x{im.size[1]}'
        checked = _same_size_beside(path, im.size)
        if checked:  # a copy resized as a whole, not one odd file: deleting files one per run would not end
            raise DataError(f"images in {os.path.dirname(path)} are {size} ({os.path.basename(path)} and the "
                            f"{checked} others checked), CIFAR-10 images are 32x32: resize every image to 32x32")
        raise DataError(f"image {path} is {size}, CIFAR-10 images are 32x32; delete or replace that file")
    # modes I;16*, I and F hold 16- or 32-bit values, and PIL opens a 48-bit PNG as 8-bit RGB whose raw
    # mode (RGB;16B) says it drops each value's low byte: converting would squash them without a word
    if im.mode in ('I', 'F') or ';16' in im.mode or any(';16' in str(tile[3]) for tile in im.tile):
        raise DataError(f"image {path} has {im.mode} pixels of more than 8 bits; CIFAR-10 images are 8-bit RGB: "
                        "convert it to 8-bit RGB (or delete it)")
    if im.mode in GRAYSCALE_MODES:  # converting would copy one channel into three: not a CIFAR-10 image
        raise DataError(f"image {path} is grayscale ({im.mode}); CIFAR-10 images are RGB: "
                        "convert it to RGB (or delete it)")


def _same_size_beside(path, size, handful=5):
    """How many other images beside `path` were checked and found `size` too (their headers only, the first
    `handful` by name); 0 when fewer than two could be, or one differs."""
    folder = os.path.dirname(path)
    try:
        others = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                  if _is_image_name(n) and n != os.path.basename(path)][:handful]
        for other in others:
            with Image.open(other) as im:
                if im.size != size:
                    return 0
    except Exception:  # noqa: BLE001 - an unreadable neighbour: say what is known, about this file
        return 0
    return len(others) if len(others) >= 2 else 0


TRAIN_BATCHES = [f'data_batch_{i}' for i in range(1, 6)]
TEST_BATCHES = ['test_batch']


def _read_batches(root, train, download=True):
    """(uint8 N x 32 x 32 x 3, labels) from torchvision's CIFAR-10 folder, downloading it when missing.

    The batches are CIFAR-10's documented pickles ('data': N x 3072 rows of
    R, G, B planes; 'labels'), read here directly: present files are enough, so
    smaller copies in the same layout (the tests make one) load too.
    """
    if os.path.isfile(root):
        raise DataError(f"--data {root} is a file; give the folder that holds CIFAR-10 "
                        "(or a new one to download it into)")
    folder = os.path.join(root, TORCHVISION_FOLDER)
    if not os.path.isdir(folder):
        _refuse_one_folder_down(root)
        _refuse_one_split(root)
        if not download:
            raise DataError(f"no CIFAR-10 in {root}; " + _cifar_100_there(root) + WHAT_TO_PUT.format(d=root))
        _download(root, train)
    pixels, labels = [], []
    for name in TRAIN_BATCHES if train else TEST_BATCHES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing; " + WHAT_TO_PUT.format(d=root))
        afresh = f"delete {folder} and run again to download it afresh"
        try:
            with open(path, 'rb') as f:
                batch = BatchUnpickler(f, encoding='latin1').load()
        except RefusedGlobal:
            raise DataError(f"{path} holds pickled code or objects other than CIFAR-10's arrays; "
                            f"refused, not run; {afresh}") from None
        except OSError as e:
            raise DataError(f"cannot read {path} ({e.strerror or e}); make it readable or {afresh}") from None
        except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways, all meaning the same
            raise DataError(f"{path} is damaged ({type(e).__name__}: {e}); {afresh}") from None
        try:
            images, batch_labels = _batch_contents(batch)
        except ValueError as e:
            raise DataError(f"{path} is damaged ({e}); {afresh}") from None
        pixels.append(images)
        labels.append(batch_labels)
    return np.concatenate(pixels).transpose(0, 2, 3, 1), np.concatenate(labels)


def _download(root, train):
    """torchvision's download of CIFAR-10 into `root`, or a DataError that says why not and what is there."""
    made = paths.first_missing_folder(root)  # a mistyped --data should not leave folders behind
    if made and paths.nearest_existing(root) is None:  # not even its drive: nothing to download onto
        raise DataError(f"{made} is not there (no drive or disk is mounted there), so CIFAR-10 cannot go into "
                        f"{root}; connect that drive, or give --data a folder on a drive that is there")
    import torchvision
    try:
        torchvision.datasets.CIFAR10(root=root, train=train, download=True)
    except (OSError, RuntimeError) as e:  # no network, DNS failure, disk full, bad archive...
        if made:
            shutil.rmtree(made, ignore_errors=True)
        reason = getattr(e, 'reason', None) or e
        # torchvision uses an archive already there only if its MD5 is right, else downloads it again: an
        # interrupted download's is not (read here only when the download failed, not on every start)
        from torchvision.datasets.utils import check_integrity
        archive = os.path.join(root, torchvision.datasets.CIFAR10.filename)
        if os.path.isfile(archive) and not check_integrity(archive, torchvision.datasets.CIFAR10.tgz_md5):
            raise DataError(f"{archive} is incomplete or damaged (an interrupted download?) and could not be "
                            f"downloaded again ({reason}); delete it and run again, or download it again "
                            "on a machine with a network and put it there") from None
        raise DataError(f"no CIFAR-10 in {root} and it could not be downloaded ({reason}); "
                        + _cifar_100_there(root) + WHAT_TO_PUT.format(d=root)) from None


def _refuse_one_folder_down(root):
    """A DataError when `root` holds nothing but one folder, which holds CIFAR-10: --data one level too high."""
    entries = [e for e in _listdir(root) if not _hidden(e)] if os.path.isdir(root) else []
    inside = os.path.join(root, entries[0]) if len(entries) == 1 else None
    if inside and layout(inside):
        raise DataError(f"{root} holds CIFAR-10 one folder down, in {inside}: pass --data {inside}")


def _refuse_one_split(root):
    """A DataError when `root` is one split of an image folder (it holds class folders): --data one level
    too deep, which would otherwise download CIFAR-10 into the student's image folder."""
    found = sorted(c for c in CLASSES if os.path.isdir(os.path.join(root, c)))
    if found:
        parent = os.path.dirname(os.path.abspath(root))
        raise DataError(f"{root} holds class folders ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}): it is "
                        f"one split of an image folder; pass --data {parent}, which should hold train/ and test/")


def _cifar_100_there(root):
    """What to add to 'no CIFAR-10' when `root` holds CIFAR-100 (its folder, or that folder's files) instead."""
    hundred = os.path.join(root, 'cifar-100-python')
    if os.path.isdir(hundred):
        return f"{hundred} is CIFAR-100 and this package needs CIFAR-10; "
    if all(os.path.isfile(os.path.join(root, name)) for name in ('train', 'test')):
        return f"{root} holds CIFAR-100's files (train, test) and this package needs CIFAR-10; "
    return ''


class RefusedGlobal(pickle.UnpicklingError):
    """A batch file's pickle names a function or class that CIFAR-10's batches do not need."""


def _latin1_encode(text, encoding='latin1'):
    """_codecs.encode as Python 3 pickles bytes at protocol 2, for latin-1 only (no other codec runs)."""
    if encoding not in ('latin1', 'latin-1'):
        raise RefusedGlobal(f'_codecs.encode with {encoding}')
    return text.encode('latin1')


def _batch_globals():
    """The only globals a CIFAR-10 batch may name: how numpy pickles an array (under numpy 1's and
    numpy 2's module names, and protocol 5's _frombuffer), and bytes pickled by Python 3 at protocol 2."""
    try:
        from numpy._core import multiarray, numeric  # numpy 2 (numpy 1.26 has it as an alias)
    except ImportError:
        from numpy.core import multiarray, numeric
    allowed = {('_codecs', 'encode'): _latin1_encode, ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
    for module in ('numpy.core', 'numpy._core'):
        allowed[(module + '.multiarray', '_reconstruct')] = multiarray._reconstruct
        allowed[(module + '.multiarray', 'scalar')] = multiarray.scalar
        allowed[(module + '.numeric', '_frombuffer')] = numeric._frombuffer
    return allowed


BATCH_GLOBALS = _batch_globals()


class BatchUnpickler(pickle.Unpickler):
    """Reads CIFAR-10's batch pickles (dicts of strings, lists of ints and numpy arrays) and nothing else.

    A pickle can name any function to call while it is read (os.system, say):
    plain pickle.load runs it. Here every name outside numpy's array rebuilding
    is refused before anything is called."""

    def find_class(self, module, name):
        allowed = BATCH_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedGlobal(f'{module}.{name}')
        return allowed


def _batch_contents(batch):
    """(uint8 N x 3 x 32 x 32, int64 labels) of an unpickled batch, or a ValueError saying what is wrong."""
    if not isinstance(batch, dict) or 'data' not in batch or 'labels' not in batch:
        raise ValueError("not a dict with 'data' and 'labels'")
    data, labels = batch['data'], batch['labels']
    if not isinstance(data, np.ndarray) or data.dtype.kind not in 'iu' or data.ndim != 2 or data.shape[1] != 3072:
        what = f'{data.dtype} array of shape {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"'data' is a {what}, not N x 3072 pixel values")
    if len(data) == 0:
        raise ValueError('it holds no images')
    if data.min() < 0 or data.max() > 255:
        raise ValueError("'data' holds values outside 0-255")
    if not isinstance(labels, (list, np.ndarray)):
        raise ValueError(f"'labels' is a {type(labels).__name__}, not a list")
    if len(labels) != len(data):  # a shorter list would pair images with the wrong labels
        raise ValueError(f"{len(labels)} labels for {len(data)} images")
    wrong = [v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 9]
    if wrong:
        raise ValueError(f"a label is {wrong[0]!r}; CIFAR-10's labels are whole numbers 0-9")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), np.array(labels, dtype=np.int64)


class ArrayDataset(torch.utils.data.Dataset):
    """Images held as one uint8 array, given out as PIL images through `transform` (as torchvision's CIFAR10 does)."""

    def __init__(self, pixels, labels, transform=None):
        self.data, self.targets, self.transform = pixels, labels.tolist(), transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        image = Image.fromarray(self.data[i])
        return (self.transform(image) if self.transform else image), self.targets[i]


def datasets(root, download=True, train=True):
    """The assignment's (train, test) datasets with PIL transforms."""
    transform_train, transform_test = assignment_transforms()
    if layout(root) == 'folder':
        train_set = ImageFiles(_split_dir(root, 'train'), transform_train) if train else None
        # the test split is read after the epoch and the save: its headers are checked now, before them
        return train_set, ImageFiles(_split_dir(root, 'test'), transform_test, check=True)
    return (ArrayDataset(*_read_batches(root, True, download), transform_train) if train else None,
            ArrayDataset(*_read_batches(root, False, download), transform_test))


def plain_loaders(root, batch_size=100, download=True, train=True):
    """The assignment's loaders: shuffled training set, batch 100, no workers. train=False reads only
    the test split (train is None)."""
    train_dataset, test_dataset = datasets(root, download, train)
    train_loader = train_dataset and torch.utils.data.DataLoader(
        dataset=train_dataset, batch_size=batch_size, shuffle=True, drop_last=len(train_dataset) % batch_size == 1)
    test_loader = torch.utils.data.DataLoader(dataset=test_dataset, batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def decode(root, split, download=True):
    """All images of a split as (uint8 tensor N x 3 x 32 x 32, int64 labels)."""
    if layout(root) == 'folder':
        # _split_dir has checked that every class folder holds an image, so samples is never empty
        samples = image_files(_split_dir(root, split))
        pixels = _read_pixels([path for path, _ in samples])
        labels = np.array([label for _, label in samples])
    else:
        pixels, labels = _read_batches(root, split == 'train', download)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(labels).long()


def hold_out(images, labels, n):
    """(training, validation) pairs: `n` images kept for validation, the same ones every time."""
    if n >= len(labels):
        raise DataError(f'holding out {n} images leaves none to train on (there are {len(labels)}); '
                        'give a smaller --holdout')
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    keep, held = order[n:].sort().values, order[:n].sort().values
    return (images[keep], labels[keep]), (images[held], labels[held])


def tensor_loaders(root, batch_size, device, seed=None, train=True, holdout=0, test_batch_size=None,
                   rank=0, world=1, cutout=0, channels_last=True):
    """(train, test) TensorLoaders over decoded images on `device`, in channels_last (or not: a
    student's own network may `x.view` its input, which channels_last memory does not allow).

    train=False decodes only the test split (train is None). With `holdout`,
    the test loader is that many images held out of the training split, and the
    test split is not read at all. `cutout` > 0 adds Cutout to the training batches.
    """
    train_data = decode(root, 'train') if train or holdout else None
    if holdout:
        train_data, test_data = hold_out(*train_data, holdout)
    else:
        test_data = decode(root, 'test')
    test = TensorLoader(*test_data, test_batch_size or batch_size, device=device, channels_last=channels_last)
    if not train:
        return None, test
    return TensorLoader(*train_data, batch_size, train=True, device=device, channels_last=channels_last, seed=seed,
                        rank=rank, world=world, cutout=cutout), test


def random_crop_flip(images, padding=4, generator=None):
    """RandomCrop(size, padding) with zero fill, then RandomHorizontalFlip, per image of a batch.

    One gather does both: each image gets its own window into the padded batch,
    read right to left when it is flipped.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dev = images.device
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(dev)
    flip = (torch.rand(n, 1, generator=generator) < 0.5).to(dev)
    rows = oy + torch.arange(h, device=dev)
    cols = ox + torch.where(flip, torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev))
    return padded[torch.arange(n, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def cutout(images, size, generator=None):
    """Cutout (DeVries & Taylor, 2017): each image loses a size x size square, 0 after normalization.

    The square's centre is anywhere in the image, so near an edge only part of
    it falls inside. Train-time only, for recipes that need more regularization
    than crop and flip; main.py's assignment pipeline does not use it.
    """
    n, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n, 1), generator=generator).to(dev) - size // 2
    cx = torch.randint(0, w, (n, 1), generator=generator).to(dev) - size // 2
    rows = torch.arange(h, device=dev) - cy  # row index relative to the square's top edge
    cols = torch.arange(w, device=dev) - cx
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return images.masked_fill(inside[:, None], 0)


def _per_channel(values, images):
    return torch.tensor(values, device=images.device).view(1, 3, 1, 1) * 255


def normalize(images):
    """uint8 image batches as the float input the models take: ToTensor's /255 and Normalize in one step."""
    return (images.float() - _per_channel(MEAN, images)) / _per_channel(STD, images)


def denormalize(images):
    """`normalize`'s inverse: the uint8 pixels the data holds (exact, Normalize is affine)."""
    pixels = images.float() * _per_channel(STD, images) + _per_channel(MEAN, images)
    return pixels.round().clamp(0, 255).to(torch.uint8)


class TensorLoader:
    """Batches of normalized float images from decoded uint8 tensors.

    Yields (images, labels) on `device` like a DataLoader over the assignment's
    transforms would; when `extra` is set (a tensor with a row per image, e.g.
    a teacher's predictions), (images, labels, those rows). With `world` > 1
    each rank reads its own share of every epoch's permutation
    (DistributedDataParallel), all shares the same size so that every rank
    takes the same number of steps.
    """

    def __init__(self, images, labels, batch_size=100, train=False, device='cpu',
                 channels_last=False, seed=None, rank=0, world=1, cutout=0):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.train, self.device = batch_size, train, torch.device(device)
        self.channels_last, self.rank, self.world, self.cutout = channels_last, rank, world, cutout
        self.generator = torch.Generator()
        self.generator.manual_seed(torch.initial_seed() if seed is None else seed)
        self.dataset = images  # len(loader.dataset) works as with a DataLoader
        self.extra = None

    def _share(self):
        """Images per rank; with several ranks the few left over (fewer than `world`) sit out this epoch."""
        return len(self.labels) // self.world if self.world > 1 else len(self.labels)

    def __len__(self):
        batches = math.ceil(self._share() / self.batch_size)
        return batches - 1 if self.train and self._share() % self.batch_size == 1 and batches > 1 else batches

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        order = order[self.rank::self.world][:self._share()].to(self.device)
        for idx in order.split(self.batch_size)[:len(self)]:
            x = self.images[idx]
            if self.train:
                x = random_crop_flip(x, generator=self.generator)
            x = normalize(x)
            if self.train and self.cutout:
                x = cutout(x, self.cutout, generator=self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield (x, self.labels[idx]) if self.extra is None else (x, self.labels[idx], self.extra[idx])
