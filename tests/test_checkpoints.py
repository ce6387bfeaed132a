"""Bad checkpoints end in a clear CheckpointError; saving never leaves half a file."""
import hashlib
import os
import pickle
import re

import pytest
import torch

from helpers.checkpoints import (CheckpointError, load_checkpoint, read_state_dict, read_training_state,
                                 save_checkpoint, ship_checkpoint)
from helpers.model_table import MODELS


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
    with pytest.raises(CheckpointError, match=r'is a folder; give a checkpoint file$'):
        load_checkpoint(resnet(), str(tmp_path))
    torch.save(resnet().state_dict(), tmp_path / 'mine.ckpt')
    with pytest.raises(CheckpointError, match=r'is a folder; give a checkpoint file in it, e\.g\. .*mine\.ckpt'):
        load_checkpoint(resnet(), str(tmp_path))


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
        pickle.dump(Payload(str(marker)), f, protocol=2)  # the protocol torch.save uses
    with pytest.raises(CheckpointError, match=r'refused to load .*evil\.pkl: it holds pickled code'):
        read_state_dict(str(tmp_path / 'evil.pkl'))
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_called_that_not_pickled_code(tmp_path):
    # found by hand: main.py --checkpoint README.md said the file "holds pickled code"
    (tmp_path / 'notes.md').write_text('# my notes\nnot weights\n')
    (tmp_path / 'noise.ckpt').write_bytes(bytes(range(7, 256)) * 4)
    for name in 'notes.md', 'noise.ckpt':
        with pytest.raises(CheckpointError) as e:
            read_state_dict(str(tmp_path / name))
        assert re.fullmatch(rf'\S*{name} is damaged or not a PyTorch checkpoint; download or copy it again',
                            str(e.value))
        with pytest.raises(CheckpointError) as e:
            read_training_state(str(tmp_path / name))
        assert re.fullmatch(rf"\S*{name} is damaged or not train.py's state; start the run again without --resume",
                            str(e.value))


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
    with pytest.raises((AttributeError, pickle.PicklingError), match='lambda'):
        save_checkpoint({'bad': lambda: 0}, str(path))  # torch.save cannot pickle a lambda
    assert path.read_bytes() == b'old run'
    assert os.listdir(tmp_path) == ['out.ckpt']


def test_ctrl_c_in_the_middle_of_a_save_keeps_the_earlier_file_whole(tmp_path, monkeypatch):
    path = tmp_path / 'out.ckpt'
    path.write_bytes(b'old run')

    def interrupted_save(obj, f):
        f.write(b'half a checkpoint')
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'w': torch.zeros(3)}, str(path))
    assert path.read_bytes() == b'old run'
    assert os.listdir(tmp_path) == ['out.ckpt']  # no temporary file left behind


def test_saved_files_get_the_usual_permissions_and_portable_tensors(tmp_path):
    umask = os.umask(0o022)
    try:
        save_checkpoint({'w': torch.zeros(2, 3, 4, 4).to(memory_format=torch.channels_last)}, str(tmp_path / 'a.ckpt'))
    finally:
        os.umask(umask)
    assert (tmp_path / 'a.ckpt').stat().st_mode & 0o777 == 0o644
    loaded = torch.load(tmp_path / 'a.ckpt')
    assert loaded['w'].is_contiguous() and loaded['w'].device.type == 'cpu'


def test_shipping_replaces_a_shipped_checkpoint_and_its_sha256_line(tmp_path, checkpoints):
    path = shipped(tmp_path, checkpoints)
    (tmp_path / 'checkpoints' / 'SHA256SUMS').write_text(
        (tmp_path / 'checkpoints' / 'SHA256SUMS').read_text() + 'ab' * 32 + '  vgg16_cifar10.ckpt\n')
    torch.manual_seed(5)
    new = resnet().state_dict()
    ship_checkpoint(new, str(path))
    model = resnet()
    load_checkpoint(model, str(path))  # passes the sha256 check
    assert torch.equal(model.fc.weight, new['fc.weight'])
    lines = (tmp_path / 'checkpoints' / 'SHA256SUMS').read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith('vgg16_cifar10.ckpt')  # the other line is kept
    with pytest.raises(CheckpointError, match='will not overwrite the shipped checkpoint.*tools.ship_checkpoint'):
        save_checkpoint(new, str(path))  # main.py --out still never does


def test_training_state_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match='training state not found: .*nope.state'):
        read_training_state(str(tmp_path / 'nope.state'))
    torch.save({'fc.weight': torch.zeros(1)}, tmp_path / 'plain.ckpt')
    with pytest.raises(CheckpointError, match="not train.py's training state"):
        read_training_state(str(tmp_path / 'plain.ckpt'))
    (tmp_path / 'cut.state').write_bytes(b'PK\x03\x04 cut')
    with pytest.raises(CheckpointError, match="damaged or not train.py's state"):
        read_training_state(str(tmp_path / 'cut.state'))


def test_ctrl_c_message_names_what_was_saved(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    code = ('from helpers import checkpoints, flags\n'
            'flags.install_friendly_errors()\n'
            f'checkpoints.save_checkpoint({{}}, {str(tmp_path / "epoch20.ckpt")!r})\n'
            'raise KeyboardInterrupt\n')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 130
    assert 'saved before that: ' + str(tmp_path / 'epoch20.ckpt') in r.stderr and 'nothing new' not in r.stderr
    r = subprocess.run([sys.executable, '-c', code.split('checkpoints.save')[0] + 'raise KeyboardInterrupt\n'],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 130 and 'nothing new was saved' in r.stderr


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / 'taken').mkdir()
    with pytest.raises(CheckpointError, match='cannot write .*taken.*choose another --out'):
        save_checkpoint({'w': torch.zeros(1)}, str(tmp_path / 'taken'))
    assert os.listdir(tmp_path) == ['taken'] and not os.listdir(tmp_path / 'taken')


def test_ship_tool_stores_a_float32_file_in_half_precision_and_lists_it(tmp_path, monkeypatch):
    from helpers.weight_scaling import scale_for_adam
    from tools import ship_checkpoint as tool
    (tmp_path / 'checkpoints').mkdir()
    monkeypatch.setattr(tool, 'ROOT', str(tmp_path))
    torch.manual_seed(0)
    model = scale_for_adam(resnet())  # a scaled float32 model, as main.py saves after its epoch
    save_checkpoint(model.state_dict(), str(tmp_path / 'settled.ckpt'))
    tool.main([str(tmp_path / 'settled.ckpt')])
    shipped = tmp_path / 'checkpoints' / 'resnet50_cifar10.ckpt'
    state = torch.load(shipped, weights_only=True)
    assert state['fc.weight'].dtype == torch.float16 and state['layer1.1.running_var'].dtype == torch.float32
    assert shipped.stat().st_size < 0.6 * (tmp_path / 'settled.ckpt').stat().st_size
    loaded = resnet()
    load_checkpoint(loaded, str(shipped))  # its line in SHA256SUMS is right
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.eval()(x), model.eval()(x), rtol=1e-2, atol=1e-2)
    save_checkpoint(resnet().state_dict(), str(tmp_path / 'raw.ckpt'))
    with pytest.raises(CheckpointError, match='not scaled for the Adam epoch'):
        tool.main([str(tmp_path / 'raw.ckpt')])
