"""The fast data path gives what the assignment's transforms give."""
import os
import shutil

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


def copy_of(torchvision_root, tmp_path):
    import shutil
    shutil.copytree(torchvision_root, tmp_path / 'tv')
    return tmp_path / 'tv', tmp_path / 'tv' / 'cifar-10-batches-py' / 'test_batch'


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))  # what a hostile batch file does when unpickled


def test_a_batch_file_that_runs_code_is_refused_and_the_code_never_runs(torchvision_root, tmp_path):
    import pickle
    root, batch = copy_of(torchvision_root, tmp_path)
    marker = tmp_path / 'code-ran'
    for protocol in (2, 4, 5):
        with open(batch, 'wb') as f:
            pickle.dump({'data': np.zeros((10, 3072), np.uint8), 'labels': [0] * 10, 'x': RunsCode(marker)}, f,
                        protocol=protocol)
        with pytest.raises(DataError) as e:
            decode(str(root), 'test')
        assert str(e.value) == (f"{batch} holds pickled code or objects other than CIFAR-10's arrays; refused, "
                                f"not run; delete {root / 'cifar-10-batches-py'} and run again to download it afresh")
        assert not marker.exists()
        with pytest.raises(DataError, match='holds pickled code'):
            data.datasets(str(root), download=False)  # the plain pipeline reads the same way
        assert not marker.exists()


def test_batches_pickled_by_numpy_1_and_2_at_every_protocol_load(torchvision_root, tmp_path):
    import pickle
    root, batch = copy_of(torchvision_root, tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (7, 3072), dtype=np.uint8)
    labels = np.arange(7) % 10
    # CIFAR-10's own batches are Python 2 pickles (protocol 2) that name numpy 1's modules
    for protocol, as_numpy_1 in [(p, False) for p in range(2, pickle.HIGHEST_PROTOCOL + 1)] + [(2, True)]:
        pickled = pickle.dumps({'batch_label': 'testing batch 1 of 1', 'data': pixels, 'filenames': ['a.png'] * 7,
                                'labels': [np.int64(v) for v in labels] if as_numpy_1 else labels.tolist()},
                               protocol=protocol)
        if as_numpy_1:
            pickled = pickled.replace(b'numpy._core.', b'numpy.core.')
            assert b'numpy.core.multiarray\n_reconstruct' in pickled and b'_core' not in pickled
        batch.write_bytes(pickled)
        images, got = decode(str(root), 'test')
        assert torch.equal(images, torch.from_numpy(pixels).view(7, 3, 32, 32)) and got.tolist() == labels.tolist()


@pytest.mark.parametrize('contents, why', [
    ({'data': np.zeros((0, 3072), np.uint8), 'labels': []}, 'holds no images'),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': [1, 2, 3]}, '3 labels for 4 images'),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': [1, 2, 3, 10]}, "a label is 10; CIFAR-10's labels are"),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': [1, 2, -1, 3]}, 'a label is -1'),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': [1, 2, 3.0, 4]}, 'a label is 3.0'),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': [1, 2, '3', 4]}, "a label is '3'"),
    ({'data': np.zeros((4, 3072), np.uint8), 'labels': 'cats'}, "'labels' is a str"),
    ({'data': np.zeros((4, 3000), np.uint8), 'labels': [1, 2, 3, 4]}, r'shape \(4, 3000\), not N x 3072'),
    ({'data': np.full((4, 3072), 0.5), 'labels': [1, 2, 3, 4]}, 'float64 array'),
    ({'data': np.full((4, 3072), 256), 'labels': [1, 2, 3, 4]}, 'values outside 0-255'),
    ({'data': 'pixels', 'labels': [1, 2, 3, 4]}, "'data' is a str"),
    ([1, 2, 3], "not a dict with 'data' and 'labels'"),
])
def test_damaged_batch_contents_are_one_line(torchvision_root, tmp_path, contents, why):
    import pickle
    root, batch = copy_of(torchvision_root, tmp_path)
    batch.write_bytes(pickle.dumps(contents))
    with pytest.raises(DataError, match=r'test_batch is damaged \(.*' + why) as e:
        decode(str(root), 'test')
    assert '\n' not in str(e.value) and str(e.value).endswith('and run again to download it afresh')


def test_an_unreadable_split_or_class_folder_is_one_line(image_folder, monkeypatch):
    # the tests run as root, whom chmod 000 does not stop: make the listing fail instead
    real_listdir, real_scandir = os.listdir, os.scandir

    def refuse(folder):
        def listing(path='.', real=None):
            if os.path.abspath(path) == os.path.abspath(folder):
                raise PermissionError(13, 'Permission denied', str(path))
            return (real or real_listdir)(path)
        return listing
    for folder in (os.path.join(image_folder, 'test'), os.path.join(image_folder, 'test', 'cat')):
        monkeypatch.setattr(os, 'listdir', refuse(folder))
        with pytest.raises(DataError, match=r'^cannot read folder .*test.* \(Permission denied\); make it readable'):
            decode(image_folder, 'test')
    monkeypatch.setattr(os, 'listdir', real_listdir)
    deeper = os.path.join(image_folder, 'test', 'cat')  # a folder the walk meets, not _split_dir's listing
    monkeypatch.setattr(os, 'scandir', lambda path='.': (_ for _ in ()).throw(
        PermissionError(13, 'Permission denied', str(path))) if os.path.abspath(path) == deeper else real_scandir(path))
    with pytest.raises(DataError, match=r'^cannot read folder .*cat \(Permission denied\)'):
        decode(image_folder, 'test')


def one_image_per_class(tmp_path, split='test'):
    for c in CLASSES:
        os.makedirs(tmp_path / split / c, exist_ok=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / c / 'a.png')
    return tmp_path


def test_symlink_loops_in_a_class_folder_list_each_image_once_and_end(tmp_path):
    root = one_image_per_class(one_image_per_class(tmp_path, 'train'))
    cat = root / 'test' / 'cat'
    (cat / 'sub').mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(cat / 'sub' / 'b.png')
    expected = [str(cat / 'a.png'), str(cat / 'sub' / 'b.png')]
    os.symlink('.', cat / 'here')  # a loop: os.walk(followlinks=True) went round it 40 times
    assert [p for p, label in data.image_files(str(root / 'test')) if label == CLASSES.index('cat')] == expected
    os.symlink('..', cat / 'sub' / 'up')  # a second loop: together they hung the listing
    os.symlink('sub', cat / 'same')  # a second way into a real folder
    samples = data.image_files(str(root / 'test'))
    assert [p for p, label in samples if label == CLASSES.index('cat')] == expected and len(samples) == 11
    assert len(decode(str(root), 'test')[1]) == 11
    assert len(data.datasets(str(root))[1]) == 11  # the plain pipeline lists the same


def png_chunk(kind, body):
    import struct
    import zlib
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def png_header(width, height, bit_depth=8, colour=2):
    """A PNG's signature and header chunk: what Image.open reads to know the size."""
    import struct
    return b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, bit_depth, colour, 0, 0, 0))


def png_without_pixels(width, height):
    """A PNG that claims width x height but holds no pixel data at all."""
    return png_header(width, height) + png_chunk(b'IDAT', b'') + png_chunk(b'IEND', b'')


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    root = one_image_per_class(tmp_path)
    bomb = root / 'test' / 'dog' / 'bomb.png'
    bomb.write_bytes(png_without_pixels(100000, 100000))  # 10^10 pixels claimed in 57 bytes
    with pytest.raises(DataError, match=r'^image .*bomb\.png claims to be huge .*CIFAR-10 images are 32x32'):
        decode(str(root), 'test')
    bomb.write_bytes(png_without_pixels(10000, 10000))  # over PIL's warning limit, under its error limit
    with pytest.raises(DataError, match=r'^image .*bomb\.png claims to be huge'):
        decode(str(root), 'test')
    bomb.write_bytes(png_without_pixels(64, 64))  # no pixel data at all: refused for its size, never decoded
    with pytest.raises(DataError, match=r'^image .*bomb\.png is 64x64, CIFAR-10 images are 32x32'):
        decode(str(root), 'test')


def test_16_bit_and_float_images_are_refused_not_squashed(tmp_path):
    root = one_image_per_class(tmp_path)
    deep = root / 'test' / 'dog' / 'deep.tif'
    for pixels in (np.full((32, 32), 1000, np.uint16), np.full((32, 32), 70000, np.int32),
                   np.full((32, 32), 0.5, np.float32)):
        Image.fromarray(pixels).save(deep)
        with pytest.raises(DataError, match=r"^image .*deep\.tif has \S+ pixels of more than 8 bits; "
                                            r"CIFAR-10 images are 8-bit RGB"):
            decode(str(root), 'test')
    deep.unlink()
    import zlib
    rows = b''.join(b'\0' + b'\x12\x34' * 3 * 32 for _ in range(32))  # 48-bit RGB, which PIL opens as RGB
    (root / 'test' / 'dog' / 'deep.png').write_bytes(
        png_header(32, 32, bit_depth=16) + png_chunk(b'IDAT', zlib.compress(rows)) + png_chunk(b'IEND', b''))
    with pytest.raises(DataError, match=r'deep\.png has RGB pixels of more than 8 bits'):
        decode(str(root), 'test')


def test_decoding_in_worker_processes_gives_the_same_images_and_names_a_bad_one(image_folder, tmp_path,
                                                                                monkeypatch):
    sequential = decode(image_folder, 'train')
    monkeypatch.setattr(data, 'PARALLEL_DECODE_FROM', 0)
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1}, raising=False)
    parallel = decode(image_folder, 'train')
    assert torch.equal(parallel[0], sequential[0]) and torch.equal(parallel[1], sequential[1])
    # a bad file read by a worker is the same one-line DataError in the parent
    bad = tmp_path / 'folder'
    shutil.copytree(image_folder, bad)
    (bad / 'train' / 'ship' / '0007.png').write_bytes(b'not a png')
    with pytest.raises(DataError, match=r'cannot read image .*ship.0007\.png'):
        decode(str(bad), 'train')


def run_briefly(call, timeout=5):
    """What call() returned or raised, or 'hung' after `timeout` seconds (left running in a daemon thread)."""
    import threading
    outcome = []

    def target():
        try:
            outcome.append(call())
        except Exception as e:  # noqa: BLE001 - the test looks at what it was
            outcome.append(e)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else 'hung'


def no_network(monkeypatch, calls=None):
    """torchvision's download fails as it does without a network; `calls` collects each attempt's root."""
    import urllib.error

    import torchvision

    class Offline(torchvision.datasets.CIFAR10):
        def __init__(self, root, **kwargs):
            if calls is not None:
                calls.append(root)
            raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', Offline)


def test_data_on_a_drive_with_nothing_mounted_ends_in_one_line_without_downloading(monkeypatch):
    # Windows: dirname('E:\\') is 'E:\\', so a walk up to the first missing folder looped forever there
    import functools
    import ntpath

    from helpers import paths
    for name in ('first_missing_folder', 'nearest_existing'):
        monkeypatch.setattr(paths, name, functools.partial(getattr(paths, name), pathmod=ntpath))
    calls = []
    no_network(monkeypatch, calls)
    error = run_briefly(lambda: decode('E:\\cifar', 'train'))
    assert isinstance(error, DataError), error
    assert str(error).startswith('E:\\ is not there') and '--data' in str(error) and '\n' not in str(error)
    assert calls == []  # nothing is downloaded onto a drive that is not there
    monkeypatch.undo()
    # the same on Linux and macOS, where the tests cannot unmount '/': a root that is not there (as
    # os.path.exists says for a moment) ends the walk too
    calls.clear()
    no_network(monkeypatch, calls)
    monkeypatch.setattr(os.path, 'exists', lambda path: False)
    error = run_briefly(lambda: decode('/no/such/drive', 'train'))
    monkeypatch.undo()  # before anything else looks for a file (and so that a walk that hung ends)
    assert isinstance(error, DataError) and str(error).startswith('/ is not there'), error
    assert calls == []


def test_a_failed_download_removes_the_folders_it_made_and_keeps_what_was_there(tmp_path, monkeypatch):
    import torchvision
    made = []

    class HalfDone(torchvision.datasets.CIFAR10):
        def __init__(self, root, **kwargs):
            os.makedirs(root, exist_ok=True)  # as torchvision does before downloading
            made.append(root)
            raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', HalfDone)
    with pytest.raises(DataError, match=r'^no CIFAR-10 in .*typo.data and it could not be downloaded \(.*No space'):
        decode(str(tmp_path / 'typo' / 'data'), 'train')
    assert made and not (tmp_path / 'typo').exists()
    (tmp_path / 'mine').mkdir()
    with pytest.raises(DataError, match='could not be downloaded'):
        decode(str(tmp_path / 'mine'), 'train')
    assert (tmp_path / 'mine').is_dir()


def test_macos_appledouble_and_ds_store_files_are_skipped_in_both_pipelines(tmp_path):
    root = one_image_per_class(one_image_per_class(tmp_path, 'train'))
    for split in ('train', 'test'):
        for c in CLASSES:
            (root / split / c / '._a.png').write_bytes(b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ')
            (root / split / c / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
    (root / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
    (root / 'test' / '.AppleDouble').mkdir()  # a netatalk share's: not a class folder
    (root / 'test' / 'cat' / '.AppleDouble').mkdir()  # its files are named like the images they describe
    (root / 'test' / 'cat' / '.AppleDouble' / 'a.png').write_bytes(b'\x00\x05\x16\x07')
    assert len(decode(str(root), 'test')[1]) == 10
    _, test = data.datasets(str(root))
    assert [label for _, label in test] == list(range(10))  # every image read, no junk among them
    (root / 'test' / 'frog' / 'a.png').unlink()  # only the junk is left: the class holds no images
    with pytest.raises(DataError, match=r'class folder\(s\) frog hold no images'):
        decode(str(root), 'test')


def test_the_plain_pipeline_checks_the_test_images_before_training(tmp_path):
    # the test split is read after the epoch and the save: a bad file must stop the run before them
    from conftest import make_image_folder
    root = make_image_folder(tmp_path, train_per_class=1, test_per_class=2)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / 'test' / 'ship' / '0001.png')
    for train in (True, False):
        with pytest.raises(DataError, match=r'^image .*ship.0001\.png is 40x40'):
            data.plain_loaders(root, train=train)
    (tmp_path / 'test' / 'ship' / '0001.png').write_bytes(b'not a png')
    with pytest.raises(DataError, match=r'^cannot read image .*ship.0001\.png'):
        data.plain_loaders(root)


def test_grayscale_images_are_refused_and_palette_and_rgba_ones_accepted(tmp_path):
    root = one_image_per_class(tmp_path)
    odd = root / 'test' / 'dog' / 'odd.png'
    for mode in ('L', 'LA', '1'):
        Image.new(mode, (32, 32)).save(odd)
        for read in (lambda: decode(str(root), 'test'), lambda: data.plain_loaders(str(root), train=False)):
            with pytest.raises(DataError, match=rf"^image .*odd\.png is grayscale \({mode}\); CIFAR-10 images are "
                                                r"RGB: convert it to RGB \(or delete it\)$"):
                read()
    for mode in ('P', 'RGBA'):
        Image.new(mode, (32, 32)).save(odd)
        assert len(decode(str(root), 'test')[1]) == 11


def test_a_truncated_archive_from_an_interrupted_download_is_named(tmp_path, monkeypatch):
    import gzip
    archive = tmp_path / 'cifar-10-python.tar.gz'
    archive.write_bytes(gzip.compress(b'cifar-10-batches-py/data_batch_1' + bytes(5000))[:300])
    no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        decode(str(tmp_path), 'train')
    assert str(e.value).startswith(f'{archive} is incomplete or damaged')
    assert 'delete it and run again' in str(e.value) and '\n' not in str(e.value)


def test_cifar_100_is_named_as_such(tmp_path, monkeypatch):
    no_network(monkeypatch)
    hundred = tmp_path / 'cifar-100-python'
    hundred.mkdir()
    for name in ('train', 'test', 'meta'):
        (hundred / name).write_bytes(b'a CIFAR-100 pickle')
    for root in (tmp_path, hundred):
        for download in (True, False):
            with pytest.raises(DataError, match=r'CIFAR-100.*this package needs CIFAR-10') as e:
                decode(str(root), 'train', download=download)
            assert '\n' not in str(e.value)


def test_cifar_10_one_folder_down_is_named_before_any_download(tmp_path, monkeypatch):
    import re
    calls = []
    no_network(monkeypatch, calls)
    one_image_per_class(one_image_per_class(tmp_path / 'images' / 'cifar10', 'train'))
    (tmp_path / 'images' / '.DS_Store').write_bytes(b'')
    (tmp_path / 'batches' / 'unpacked' / 'cifar-10-batches-py').mkdir(parents=True)
    for root, inside in (tmp_path / 'images', 'cifar10'), (tmp_path / 'batches', 'unpacked'):
        for download in (True, False):
            with pytest.raises(DataError, match=f'^{re.escape(str(root))} holds CIFAR-10 one folder down, in .*'
                                                f'{inside}: pass --data {re.escape(str(root / inside))}$'):
                decode(str(root), 'test', download=download)
    assert calls == []


def test_a_folder_of_images_all_of_one_wrong_size_says_to_resize_them(tmp_path):
    for c in CLASSES:
        os.makedirs(tmp_path / 'test' / c)
        for j in range(4):
            Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / 'test' / c / f'{j}.png')
    for read in (lambda: decode(str(tmp_path), 'test'), lambda: data.plain_loaders(str(tmp_path), train=False)):
        with pytest.raises(DataError, match=r'^images in .*airplane are 64x64 .*CIFAR-10 images are 32x32: '
                                            r'resize every image to 32x32') as e:
            read()
        assert 'delete' not in str(e.value)


def test_a_stray_empty_split_folder_does_not_hide_the_batches(torchvision_root, tmp_path):
    root, _ = copy_of(torchvision_root, tmp_path)
    (root / 'test').mkdir()  # empty, and a train/ with no class folders in it
    (root / 'train' / 'notes').mkdir(parents=True)
    assert data.layout(str(root)) == 'torchvision'
    assert decode(str(root), 'test')[0].shape == (50, 3, 32, 32)
    assert len(data.datasets(str(root), download=False)[1]) == 50
    (root / 'test' / 'cat').mkdir()  # a class folder: an image folder after all, checked as one
    with pytest.raises(DataError, match='missing: airplane'):
        decode(str(root), 'test')


def test_holding_out_too_many_names_the_flag():
    labels = torch.arange(10)
    with pytest.raises(DataError, match=r'leaves none to train on .*--holdout'):
        data.hold_out(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), labels, 10)
