"""CIFAR-10 from torchvision's DIR/cifar-10-batches-py (MD5-checked before unpickling) or an image folder
DIR/{train,test}/<class>/*; a folder where nothing is recognized gets it downloaded, else `describe` says what to do."""
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms

from helpers.errors import Mistake
from helpers.paths import missing, shown

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
BATCHES = 'cifar-10-batches-py'
HIDDEN = ('.', '__MACOSX')  # macOS's ._* and .DS_Store, .AppleDouble/, a zip's __MACOSX/: never data
EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.tif', '.tiff', '.webp')
NAMES = f"CIFAR-10's ten class names, lower case ({', '.join(CLASSES[:2])}, ..., {CLASSES[-1]})"
PUT = ("put CIFAR-10 there: torchvision's {d}/cifar-10-batches-py (from cifar-10-python.tar.gz), or an image "
       "folder {d}/train/<class>/ and {d}/test/<class>/, <class> being " + NAMES)
OURS = ('README.md', 'cifar-10-python.tar.gz')  # the project's data/README.md; a download's partial archive
GET = "; get torchvision's CIFAR-10 instead: give --data an empty folder and it is downloaded there"
FOREIGN = [  # (what in a folder's names gives a dataset away, what to say of that folder {p})
    (lambda names: 'trainLabels.csv' in names, "{p} is Kaggle's CIFAR-10, whose test images have no labels" + GET),
    (lambda names: 'dataset_dict.json' in names or any(n.endswith(('.parquet', '.arrow')) for n in names),
     "{p} holds Hugging Face's uoft-cs/cifar10 (parquet or arrow files), which this package does not read" + GET),
    (lambda names: {'cifar-10-batches-bin', 'data_batch_1.bin'} & names, "{p} holds CIFAR-10's binary version" + GET),
    (lambda names: 'cifar-100-python' in names or {'train', 'test', 'meta'} <= names, '{p} holds CIFAR-100' + GET),
    (lambda names: sorted(n for n in names if n.startswith('cifar-10-python')), "{p} holds CIFAR-10's archive {name}, "
     'not unpacked: unpack it into {root}, or move it to {root}/cifar-10-python.tar.gz and run again to unpack it'),
]


def layout(root):
    """'folder' (a class folder in DIR/train or DIR/test), else 'torchvision' (DIR/cifar-10-batches-py), else None."""
    classes = any(os.path.isdir(os.path.join(root, s, c)) for s in ('train', 'test') for c in CLASSES)
    return 'folder' if classes else 'torchvision' if os.path.isdir(os.path.join(root, BATCHES)) else None


def _listing(folder):
    """(folder names, file names) in `folder`, sorted, hidden ones left out; unreadable: one line naming it."""
    try:
        entries = [(e.name, e.is_dir()) for e in os.scandir(folder) if not e.name.startswith(HIDDEN)]
    except OSError as e:
        raise Mistake(f'cannot read folder {shown(folder)} ({e.strerror}); make it readable (chmod -R u+rX)') from None
    return sorted(n for n, d in entries if d), sorted(n for n, d in entries if not d)


def describe(root):
    """One line on what DIR holds and what to do, from the listings of DIR, its children, grandchildren and parent
    (never a walk); None when nothing is recognized, where CIFAR-10 may be downloaded (and its archive unpacked)."""
    root, places, level = os.path.abspath(root), [], [os.path.abspath(root)]
    for _ in range(3):
        listed = [(p, *_listing(p)) for p in level]
        places, level = places + listed, [os.path.join(p, d) for p, dirs, _ in listed for d in dirs[:50]]
    places[0][2][:] = [f for f in places[0][2] if f != 'cifar-10-python.tar.gz']
    parent = os.path.dirname(root)  # an unreadable parent (another user's home) is no mistake of this run
    places.append((parent, *(_listing(parent) if os.access(parent, os.R_OK | os.X_OK) else ([], []))))
    for p, dirs, files in places:  # CIFAR-10 in the wrong place: torchvision's batches, or class folders
        home, classes = os.path.dirname(p), [c for c in CLASSES if c in dirs]
        go = [f'pass --data {shown(home)}'] if home != root else []
        rename = ['rename that folder'] if os.path.basename(p) != BATCHES else []
        if {'data_batch_1', 'test_batch'} <= set(files) and rename + go:
            return (f"{shown(p)} holds CIFAR-10's batches, which torchvision reads from "
                    f"{shown(os.path.join(home, BATCHES))}: {' and '.join(rename + go)}")
        if classes and p in (root, parent):
            return (f"{shown(p)} holds class folders ({', '.join(classes[:3])}{', ...' * (len(classes) > 3)}): it is "
                    f"one split of an image folder; pass --data {shown(home)}, which should hold train/ and test/")
        if classes:  # misnamed splits, or an image folder a level down
            splits = [os.path.basename(q) for q, d, _ in places[1:-1]
                      if os.path.dirname(q) == home and {*d} & {*CLASSES}]
            others = sorted(set(splits) - {'train', 'test'}, key=lambda s: 'train' not in s.lower())
            wanted = [w for w in ('train', 'test') if w not in splits]
            todo = [f'rename {s}/ to {w}/' for s, w in zip(others, wanted)] + go
            todo += [f'add {w}/ with its ten class folders' for w in wanted[len(others):]]
            return f"{shown(home)} holds CIFAR-10 class folders in {'/, '.join(splits)}/: {' and '.join(todo)}"
    for p, dirs, files in places:  # other datasets
        for test, advice in FOREIGN:
            found = test({*dirs, *files})
            if found:
                return advice.format(p=shown(p), root=shown(root), name=found[0] if isinstance(found, list) else '')
    if {'train', 'test'} & set(places[0][1]):  # splits without CIFAR-10's class folders: say what is there
        items = [f"{d}/ (folders: {', '.join(sub[:3]) + ', ...' * (len(sub) > 3) or 'none'}; {len(names):,} files)"
                 for d in places[0][1] for sub, names in [_listing(os.path.join(root, d))]]
        return f"{shown(root)} holds {', '.join((items + places[0][2])[:6])}; " + PUT.format(d=shown(root))
    return None


def _find(root):
    """The layout at --data `root`, downloaded into it if it is a folder where nothing is recognized; else a Mistake."""
    if os.path.isfile(root):
        raise Mistake(f'--data {shown(root)} is a file; give the folder that holds CIFAR-10 (unpack an archive first)')
    if not os.path.isdir(root):
        raise missing(root, 'data folder', 'give the folder that holds CIFAR-10 (or an empty one to download it into)')
    if layout(root) is None:
        if said := describe(root):
            raise Mistake(said)
        others = [n for n in sum(_listing(root), []) if n not in OURS]
        if others:  # never 170 MB among a project's or a home folder's files
            raise Mistake(f"no CIFAR-10 in {shown(root)}, which holds other files ({', '.join(others[:3])}"
                          f"{', ...' * (len(others) > 3)}): it is downloaded only into an empty folder, so give --data "
                          'an empty one, or ' + PUT.format(d=shown(root)))
        try:  # a partial archive left behind is torchvision's to download again: its MD5 is checked first
            datasets.CIFAR10(root, train=False, download=True)
        except Exception as e:  # noqa: BLE001 - no network, a proxy, a full disk, a bad archive: all one line
            archive = os.path.join(root, 'cifar-10-python.tar.gz')
            left = f'{shown(archive)} there is incomplete or damaged: delete it; ' * os.path.isfile(archive)
            why = ' '.join(str(getattr(e, 'reason', None) or e).split())
            raise Mistake(f"no CIFAR-10 in {shown(root)} and it could not be downloaded ({why}); {left}"
                          + PUT.format(d=shown(root)))
    return layout(root)


def _cifar10(root, train, transform=None):
    """torchvision's CIFAR10 at `root`, or one line when its MD5 check refuses a file."""
    try:
        return datasets.CIFAR10(root, train=train, transform=transform)
    except RuntimeError:  # 'Dataset not found or corrupted'
        raise Mistake(f"{shown(os.path.join(root, BATCHES))} does not hold CIFAR-10's original files (one is missing, "
                      'damaged, or re-saved by another program); delete it and run again to download them') from None


def _walk(top):
    """(folder, file names) under `top`, sorted, links followed, each real folder once (a link back up: a loop)."""
    seen, found = set(), []
    for folder, dirs, names in os.walk(top, followlinks=True, onerror=lambda e: _listing(e.filename)):
        if os.path.realpath(folder) in seen:
            dirs[:] = []
        else:
            seen.add(os.path.realpath(folder))
            found.append((folder, names))
    return sorted(found)


def _samples(root, split):
    """[(path, label)] of a split's images (by extension, any case; hidden ones left out) in torchvision ImageFolder's
    order (sorted classes, walk and names): a seed shuffles the same images in both pipelines."""
    top = os.path.join(root, split)
    if not os.path.isdir(top):
        raise Mistake(describe(root))
    dirs = _listing(top)[0]
    samples = [(os.path.join(folder, n), label) for label, name in enumerate(CLASSES) if name in dirs
               for folder, names in _walk(os.path.join(top, name))
               if not any(part.startswith(HIDDEN) for part in os.path.relpath(folder, top).split(os.sep))
               for n in sorted(names) if n.lower().endswith(EXTENSIONS) and not n.startswith(HIDDEN)]
    lost = [c for i, c in enumerate(CLASSES) if i not in {y for _, y in samples}]
    extra = sorted(set(dirs) - set(CLASSES))
    if lost or extra:
        raise Mistake(f"{shown(top)} must hold a folder for each of {NAMES}, each with images ({' '.join(EXTENSIONS)})"
                      f"; missing or empty: {', '.join(lost) or 'none'}; not CIFAR-10: {', '.join(extra) or 'none'}")
    return samples


def _read(path, decode=True):
    """(pixels, or None without decode; None) or (None, (what, fix)), judged from the header before any decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as im:
                # I, F and I;16* hold 16- or 32-bit values; PIL opens a 48-bit PNG as RGB, raw mode RGB;16B
                deep = im.mode in ('I', 'F') or ';16' in im.mode or any(';16' in str(t[3]) for t in im.tile)
                wrong = (f'is {im.size[0]}x{im.size[1]}, not 32x32', 'resize') if im.size != (32, 32) else \
                    (f'has {im.mode} pixels of more than 8 bits', 'convert') if deep else \
                    (f'is grayscale ({im.mode}), not RGB', 'convert') if im.mode in ('1', 'L', 'LA', 'La') else None
                return None if wrong or not decode else np.asarray(im.convert('RGB')), wrong  # palette, RGBA: RGB
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning
            ) as e:  # not an image, damaged, or claiming millions of pixels
        return None, (f"cannot be read ({' '.join(str(e).split())})", 'replace')


def _read_all(paths, decode=True):
    """The images at `paths` as one uint8 array N x 32 x 32 x 3 (decode=False: headers only); bad ones in one line."""
    reads = [_read(path, decode) for path in paths]
    bad = [(path, why) for path, (_, why) in zip(paths, reads) if why]
    if bad:
        (path, (what, fix)), more = bad[0], len(bad) - 1
        it, others = ('them', f' (and {more:,} more image{"s" * (more > 1)} not usable)') if more else ('it', '')
        raise Mistake(f'image {shown(path)} {what}{others}; CIFAR-10 images are 32x32 8-bit RGB: {fix} {it} '
                      f'or delete {it}')
    return np.stack([pixels for pixels, _ in reads]) if decode else None


class Split(datasets.ImageFolder):
    """An image folder's split with CIFAR-10's classes and the images _samples finds (never walked again);
    module-level, so that DataLoader workers on Windows and macOS can pickle it."""

    def find_classes(self, directory):
        return list(CLASSES), {c: i for i, c in enumerate(CLASSES)}

    def make_dataset(self, directory, *args, **kwargs):
        return _samples(os.path.dirname(directory), os.path.basename(directory))


def _pil(path):
    return Image.fromarray(_read_all([path])[0])


def CIFAR10(root, train=True, transform=None):
    """CIFAR-10's training or test split at `root`, either layout, as a torchvision dataset that applies
    `transform` to each PIL image (main.py builds its loaders on these, as the handout builds them)."""
    split = 'train' if train else 'test'
    dataset = _cifar10(root, train, transform) if _find(root) == 'torchvision' else \
        Split(os.path.join(root, split), transform, loader=_pil)
    dataset.data_dir = root  # for the line main.py prints
    return dataset


def assignment_transform(train):
    """The handout's transform_train (train=True) or transform_test, which main.py spells out."""
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose([*augment, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def check_images(dataset):
    """Every image header of an image-folder dataset checked before training: a bad one is found now, not later."""
    _read_all([path for path, _ in getattr(dataset, 'samples', [])], decode=False)


def pixels(dataset):
    """All images of a CIFAR10() dataset as (uint8 tensor N x 3 x 32 x 32, int64 labels), in its own order."""
    if hasattr(dataset, 'samples'):
        images, labels = _read_all([path for path, _ in dataset.samples]), np.array(dataset.targets)
    else:
        images, labels = dataset.data, np.array(dataset.targets)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def decode(root, split):
    """All images of a split ('train' or 'test') as pixels() gives them."""
    return pixels(CIFAR10(root, split == 'train'))


def hold_out(images, labels, n):
    """(training, validation) pairs: `n` images kept for validation, the same ones every time."""
    if n >= len(labels):
        raise Mistake(f'holding out {n} images leaves none of {len(labels)} to train on; give a smaller --holdout')
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    keep, held = order[n:].sort().values, order[:n].sort().values
    return (images[keep], labels[keep]), (images[held], labels[held])


def tensor_loaders(root, batch_size, device, seed=None, train=True, holdout=0, test_batch_size=None,
                   channels_last=True):
    """(train, test) TensorLoaders (train=False: None, test; holdout=N: N training images test instead)."""
    train_data = decode(root, 'train') if train or holdout else None
    train_data, test_data = hold_out(*train_data, holdout) if holdout else (train_data, decode(root, 'test'))
    test = TensorLoader(*test_data, test_batch_size or batch_size, device=device, channels_last=channels_last)
    return (TensorLoader(*train_data, batch_size, train=True, device=device, channels_last=channels_last, seed=seed)
            if train else None), test


def random_crop_flip(images, padding=4, generator=None):
    """RandomCrop(size, padding) with zero fill, then RandomHorizontalFlip, per image: one gather does both."""
    (n, c, h, w), dev = images.shape, images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(dev)
    flip = (torch.rand(n, 1, generator=generator) < 0.5).to(dev)
    rows = oy + torch.arange(h, device=dev)
    cols = ox + torch.where(flip, torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev))
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images):
    """uint8 image batches as the float input the models take: ToTensor's /255 and Normalize in one step."""
    mean, std = (torch.tensor(v, device=images.device).view(1, 3, 1, 1) * 255 for v in (MEAN, STD))
    return (images.float() - mean) / std


class TensorLoader:
    """(images, labels) batches on `device`, as a DataLoader over the assignment's transforms gives."""

    def __init__(self, images, labels, batch_size=100, train=False, device='cpu', channels_last=False, seed=None):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.train, self.channels_last = batch_size, train, channels_last
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
        self.dataset = images  # len(loader.dataset) works as with a DataLoader

    def __len__(self):
        batches = math.ceil(len(self.labels) / self.batch_size)
        return batches - 1 if self.train and len(self.labels) % self.batch_size == 1 and batches > 1 else batches

    def __iter__(self):
        n = len(self.labels)
        order = (torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)).to(self.device)
        for idx in order.split(self.batch_size)[:len(self)]:
            x = self.images[idx]
            if self.train:
                x = random_crop_flip(x, generator=self.generator)
            x = normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
