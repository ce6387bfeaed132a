"""Bad checkpoints end in a clear CheckpointError; saving never leaves half a file."""
import hashlib
import os
import pickle

import pytest
import torch

from checkpoint_io import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from models import MODELS


def resnet():
    return MODELS['resnet50']()


def test_round_trip_and_half_precision_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = resnet()
    half = {k: v.half() if v.is_floating_point() and 'running' not in k else v for k, v in model.state_dict().items()}
    save_checkpoint(half, str(tmp_path / 'half.ckpt'))
    other = resnet()
    load_checkpoint(other, str(tmp_path / 'half.ckpt'))
    assert other.fc.weight.dtype == torch.float32
    assert torch.allclose(other.fc.weight, model.fc.weight, atol=1e-3)
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.ckpt.*train.py'):
        load_checkpoint(resnet(), str(tmp_path / 'nope.ckpt'))


def test_the_other_models_checkpoint_is_named(checkpoints):
    with pytest.raises(CheckpointError, match='is a VGG16 checkpoint, but the model is ResNet50_layer4: use --model vgg16'):
        load_checkpoint(resnet(), checkpoints['vgg16'])
    with pytest.raises(CheckpointError, match='is a ResNet50_layer4 checkpoint.*--model resnet50'):
        load_checkpoint(MODELS['vgg16'](), checkpoints['resnet50'])


def test_unrelated_state_dict_and_wrong_shapes(tmp_path):
    torch.save({'w': torch.zeros(2)}, tmp_path / 'x.ckpt')
    with pytest.raises(CheckpointError, match='does not fit ResNet50_layer4: 373 keys missing'):
        load_checkpoint(resnet(), str(tmp_path / 'x.ckpt'))
    sd = MODELS['resnet50'](num_classes=100).state_dict()
    torch.save(sd, tmp_path / 'y.ckpt')
    with pytest.raises(CheckpointError, match=r'other shapes, e.g. fc.weight is \(100, 1024\)'):
        load_checkpoint(resnet(), str(tmp_path / 'y.ckpt'))


def test_truncated_checkpoint(tmp_path, checkpoints):
    data = open(checkpoints['resnet50'], 'rb').read()
    for cut in (len(data) // 2, 100, 0):
        (tmp_path / 'cut.ckpt').write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match='damaged or truncated|damaged or not a PyTorch'):
            load_checkpoint(resnet(), str(tmp_path / 'cut.ckpt'))


def test_git_lfs_pointer(tmp_path):
    (tmp_path / 'lfs.ckpt').write_text('version https://git-lfs.github.com/spec/v1\n'
                                       'oid sha256:' + '0' * 64 + '\nsize 31000000\n')
    with pytest.raises(CheckpointError, match='Git LFS pointer.*git lfs pull'):
        load_checkpoint(resnet(), str(tmp_path / 'lfs.ckpt'))


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))  # would create the marker file when unpickled


def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / 'code-ran'
    torch.save({'fc.weight': torch.zeros(10, 1024), 'evil': Payload(str(marker))}, tmp_path / 'evil.ckpt')
    with pytest.raises(CheckpointError, match='refused to load .*pickled code'):
        load_checkpoint(resnet(), str(tmp_path / 'evil.ckpt'))
    assert not marker.exists()
    with open(tmp_path / 'evil.pkl', 'wb') as f:  # a plain pickle, not a torch zip file
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(CheckpointError):
        read_state_dict(str(tmp_path / 'evil.pkl'))
    assert not marker.exists()


def shipped(tmp_path, checkpoints):
    d = tmp_path / 'checkpoints'
    d.mkdir()
    data = open(checkpoints['resnet50'], 'rb').read()
    (d / 'resnet50_cifar10.ckpt').write_bytes(data)
    (d / 'SHA256SUMS').write_text(f'{hashlib.sha256(data).hexdigest()}  resnet50_cifar10.ckpt\n')
    return d / 'resnet50_cifar10.ckpt'


def test_shipped_checkpoint_must_match_sha256sums(tmp_path, checkpoints):
    path = shipped(tmp_path, checkpoints)
    load_checkpoint(resnet(), str(path))
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='does not match its line in SHA256SUMS.*git checkout'):
        load_checkpoint(resnet(), str(path))


def test_save_never_overwrites_a_shipped_checkpoint(tmp_path, checkpoints):
    path = shipped(tmp_path, checkpoints)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match='will not overwrite the shipped checkpoint'):
        save_checkpoint(resnet().state_dict(), str(path))
    assert path.read_bytes() == before


def test_failed_save_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / 'out.ckpt'
    path.write_bytes(b'old run')
    with pytest.raises(Exception):
        save_checkpoint({'x': Payload(str(tmp_path / 'm'))} | {'bad': lambda: 0}, str(path))
    assert path.read_bytes() == b'old run'
    assert os.listdir(tmp_path) == ['out.ckpt']


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / 'taken').mkdir()
    with pytest.raises(CheckpointError, match='cannot write .*taken.*choose another --out'):
        save_checkpoint({'w': torch.zeros(1)}, str(tmp_path / 'taken'))
    assert os.listdir(tmp_path) == ['taken'] and not os.listdir(tmp_path / 'taken')
