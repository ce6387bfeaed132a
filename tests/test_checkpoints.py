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
    with pytest.raises(CheckpointError, match=r'does not fit ResNet50_layer4: 320 missing, 1 unexpected \(fc.bias \(10,\) is missing; .*w \(2,\)|does not fit ResNet50_layer4: 320 missing, 1 unexpected'):
        load_checkpoint(resnet(), str(tmp_path / 'x.ckpt'))
    sd = MODELS['resnet50'](num_classes=100).state_dict()
    torch.save(sd, tmp_path / 'y.ckpt')
    with pytest.raises(CheckpointError, match=r'does not fit ResNet50_layer4: 2 of other shapes \(fc.weight is \(100, 1024\), the model\'s \(10, 1024\); fc.bias is \(100,\)'):
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


@pytest.mark.slow
def test_ctrl_c_message_names_what_was_saved(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    code = ('from helpers import checkpoints, errors\n'
            'errors.install()\n'
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


def test_an_out_through_a_symlink_and_dotdot_never_replaces_a_shipped_checkpoint(tmp_path, checkpoints):
    path = shipped(tmp_path, checkpoints)
    before = path.read_bytes()
    (tmp_path / 'checkpoints' / 'deep').mkdir()
    (tmp_path / 'outputs').mkdir()
    os.symlink(tmp_path / 'checkpoints' / 'deep', tmp_path / 'outputs' / 'link')
    # spelt as outputs/resnet50_cifar10.ckpt, but the link's '..' is checkpoints/
    sneaky = str(tmp_path / 'outputs' / 'link' / '..' / 'resnet50_cifar10.ckpt')
    with pytest.raises(CheckpointError, match=r'will not overwrite the shipped checkpoint .*\(that is .*checkpoints/'
                                              r'resnet50_cifar10\.ckpt\); choose another --out'):
        save_checkpoint(resnet().state_dict(), sneaky)
    assert path.read_bytes() == before and not os.path.exists(tmp_path / 'outputs' / 'resnet50_cifar10.ckpt')


@pytest.mark.parametrize('where', ['checkpoints/SHA256SUMS', 'outputs/SHA256SUMS', 'checkpoints/deep/../SHA256SUMS'])
def test_no_sha256sums_is_ever_overwritten_by_a_save(tmp_path, checkpoints, where):
    shipped(tmp_path, checkpoints)
    (tmp_path / 'outputs').mkdir()
    (tmp_path / 'checkpoints' / 'deep').mkdir()
    sums = tmp_path / 'checkpoints' / 'SHA256SUMS'
    before = sums.read_bytes()
    with pytest.raises(CheckpointError, match=r"will not overwrite .*SHA256SUMS.*: it lists the shipped "
                                              r"checkpoints' sha256 sums; choose another --out"):
        save_checkpoint({'w': torch.zeros(1)}, str(tmp_path / where))
    assert sums.read_bytes() == before and not (tmp_path / 'outputs' / 'SHA256SUMS').exists()


def test_nothing_is_saved_into_the_projects_checkpoints_folder(tmp_path, monkeypatch):
    from helpers import checkpoints
    folder = tmp_path / 'project' / 'checkpoints'
    folder.mkdir(parents=True)  # no SHA256SUMS: the folder itself is what is guarded
    monkeypatch.setattr(checkpoints, 'SHIPPED_FOLDER', str(folder))
    os.symlink(folder, tmp_path / 'alias')
    for out in (folder / 'mine.ckpt', tmp_path / 'alias' / 'mine.ckpt', folder / 'sub' / 'mine.ckpt'):
        with pytest.raises(CheckpointError, match=r'will not write .*mine\.ckpt.*: .*checkpoints holds only the '
                                                  r'shipped checkpoints; choose another --out'):
            save_checkpoint({'w': torch.zeros(1)}, str(out))
    assert not os.listdir(folder)
    save_checkpoint({'w': torch.zeros(1)}, str(tmp_path / 'project' / 'mine.ckpt'))  # beside it is fine


def test_a_damaged_sha256sums_is_one_line_and_blank_lines_are_skipped(tmp_path, checkpoints, monkeypatch):
    from helpers import checkpoints as module
    path = shipped(tmp_path, checkpoints)
    sums = tmp_path / 'checkpoints' / 'SHA256SUMS'
    good = sums.read_text()
    sums.write_text('\n' + good + '\n   \n')
    load_checkpoint(resnet(), str(path))  # blank lines mean nothing
    sums.write_text(good + 'not a sum\n')
    with pytest.raises(CheckpointError, match=r"^line 2 of .*SHA256SUMS is not '<sha256>  <file name>'; "
                                              r"restore it with `git checkout -- .*SHA256SUMS`$"):
        load_checkpoint(resnet(), str(path))
    sums.write_bytes(path.read_bytes()[:5000])  # a checkpoint saved over it, as --out could before
    for attempt in (lambda: load_checkpoint(resnet(), str(path)),
                    lambda: save_checkpoint({'w': torch.zeros(1)}, str(tmp_path / 'checkpoints' / 'x.ckpt')),
                    lambda: ship_checkpoint(resnet().state_dict(), str(path))):
        with pytest.raises(CheckpointError, match=r'^\S*SHA256SUMS is not a list of sha256 sums \(it is not text\); '
                                                  r'restore it with `git checkout'):
            attempt()
    sums.write_text(good)
    real_open = open

    def unreadable(file, *args, **kwargs):
        if str(file).endswith('SHA256SUMS'):
            raise PermissionError(13, 'Permission denied', str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(module, 'open', unreadable, raising=False)  # root reads a mode-000 file anyway
    with pytest.raises(CheckpointError, match=r'^cannot read .*SHA256SUMS \(Permission denied\); make it readable'):
        load_checkpoint(resnet(), str(path))


def test_shipping_writes_both_files_or_neither(tmp_path, checkpoints, monkeypatch):
    import tempfile
    path = shipped(tmp_path, checkpoints)
    sums = tmp_path / 'checkpoints' / 'SHA256SUMS'
    sums.write_text(sums.read_text() + '\n')  # a blank line: shipping once replaced the file, then crashed
    torch.manual_seed(5)
    new = resnet().state_dict()
    ship_checkpoint(new, str(path))
    load_checkpoint(resnet(), str(path))  # the line matches the new file
    before = {p: p.read_bytes() for p in (path, sums)}
    real_mkstemp = tempfile.mkstemp

    def full_disk_for_the_sums(*args, prefix='', **kwargs):
        if 'SHA256SUMS' in prefix:
            raise OSError(28, 'No space left on device')
        return real_mkstemp(*args, prefix=prefix, **kwargs)
    monkeypatch.setattr(tempfile, 'mkstemp', full_disk_for_the_sums)
    torch.manual_seed(6)
    with pytest.raises(CheckpointError, match=r'cannot write .*No space left on device.*both files are as they were'):
        ship_checkpoint(resnet().state_dict(), str(path))
    assert {p: p.read_bytes() for p in (path, sums)} == before
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['SHA256SUMS', 'resnet50_cifar10.ckpt']


def inflated(checkpoint, tmp_path, mib=300):
    """The checkpoint with an extra deflated entry of `mib` MiB of zeros: a few hundred KiB on disk."""
    import shutil
    import zipfile
    path = tmp_path / 'inflated.ckpt'
    shutil.copy(checkpoint, path)
    with zipfile.ZipFile(path, 'a', zipfile.ZIP_DEFLATED) as z:
        with z.open('archive/data/9999', 'w', force_zip64=True) as f:
            for _ in range(mib):
                f.write(bytes(1 << 20))
    assert path.stat().st_size < os.path.getsize(checkpoint) + (1 << 20)
    return str(path)


def test_a_small_file_that_would_unpack_huge_is_refused_before_torch_load(tmp_path, checkpoints, monkeypatch):
    path = inflated(checkpoints['resnet50'], tmp_path)
    torch.save({'args': {}, 'epoch': 1, 'model': {}, 'optimizer': {}}, tmp_path / 'run.state')
    (tmp_path / 'state').mkdir()
    state = inflated(tmp_path / 'run.state', tmp_path / 'state')  # train.py's state, inflated the same way

    def never(*args, **kwargs):
        raise AssertionError('torch.load was reached')
    monkeypatch.setattr(torch, 'load', never)
    for attempt in (lambda: load_checkpoint(resnet(), path), lambda: read_state_dict(path),
                    lambda: read_training_state(state)):
        with pytest.raises(CheckpointError, match=r'^\S*inflated\.ckpt would unpack to \d+ MiB in \d+ entries, more '
                                                  r'than the weights it should hold need .*refused before reading it'):
            attempt()


def test_a_checkpoint_of_the_expected_size_still_loads_into_either_model(checkpoints, tmp_path):
    # the bound leaves room for the other model's checkpoint, which is then named as such
    with pytest.raises(CheckpointError, match='is a ResNet50_layer4 checkpoint'):
        load_checkpoint(MODELS['vgg16'](), checkpoints['resnet50'])
    double = {k: v.double() if v.is_floating_point() else v for k, v in resnet().state_dict().items()}
    torch.save(double, tmp_path / 'float64.ckpt')
    load_checkpoint(resnet(), str(tmp_path / 'float64.ckpt'))


def with_nan(state, key='fc.weight'):
    state = dict(state)
    state[key] = state[key].clone()
    state[key].view(-1)[3] = float('nan')
    return state


def test_weights_that_hold_nan_or_infinity_are_not_saved(tmp_path):
    path = tmp_path / 'out.ckpt'
    path.write_bytes(b'old run')
    sd = resnet().state_dict()
    bad = with_nan(sd)
    bad['layer1.0.weight'] = torch.full_like(sd['layer1.0.weight'], float('inf'))
    for obj in (bad, {'args': {}, 'epoch': 3, 'model': bad, 'optimizer': {}}):  # main.py's and train.py's
        with pytest.raises(CheckpointError) as e:
            save_checkpoint(obj, str(path))
        assert re.fullmatch(rf'\S*out\.ckpt not saved: 2 of {len(sd)} tensors hold NaN or infinity \(the run '
                            r'diverged\); a file already there is as it was; use a smaller --lr', str(e.value))
        assert path.read_bytes() == b'old run' and os.listdir(tmp_path) == ['out.ckpt']
    with pytest.raises(CheckpointError, match='not saved: 1 of'):
        ship_checkpoint(with_nan(sd), str(tmp_path / 'shipped.ckpt'))
    assert os.listdir(tmp_path) == ['out.ckpt']


def test_a_checkpoint_holding_nan_is_named_as_such(tmp_path):
    torch.save(with_nan(resnet().state_dict()), tmp_path / 'nan.ckpt')
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(resnet(), str(tmp_path / 'nan.ckpt'))
    assert re.fullmatch(r'\S*nan\.ckpt holds NaN or infinite weights \(1 of 373 tensors\); it cannot be fine-tuned '
                        r'or tested; use another checkpoint \(the run that saved it had diverged\)', str(e.value))
    state = resnet().state_dict()
    state['layer1.1.running_var'][0] = float('inf')  # overflowed statistics still test: main.py's guard names them
    torch.save(state, tmp_path / 'overflowed.ckpt')
    load_checkpoint(resnet(), str(tmp_path / 'overflowed.ckpt'))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol 4')  # torch's note on evil4.pkl, which it refuses
def test_pickled_code_is_told_from_damage_by_the_pickle_not_torchs_wording(tmp_path, monkeypatch):
    marker = tmp_path / 'code-ran'
    torch.save({'fc.weight': torch.zeros(10, 1024), 'evil': Payload(str(marker))}, tmp_path / 'evil.ckpt')
    with open(tmp_path / 'evil4.pkl', 'wb') as f:
        pickle.dump(Payload(str(marker)), f, protocol=4)  # names its function with STACK_GLOBAL
    data = open(tmp_path / 'evil.ckpt', 'rb').read()
    (tmp_path / 'cut.ckpt').write_bytes(data[:len(data) // 2])
    real_load = torch.load

    def reworded(*args, **kwargs):  # whatever torch says, in words no check knows
        try:
            return real_load(*args, **kwargs)
        except Exception as e:
            raise pickle.UnpicklingError('Unsupported global: the wording of some other torch version') from e
    monkeypatch.setattr(torch, 'load', reworded)
    for name in ('evil.ckpt', 'evil4.pkl'):
        with pytest.raises(CheckpointError, match=rf'refused to load \S*{name}: it holds pickled code'):
            read_state_dict(str(tmp_path / name))
    with pytest.raises(CheckpointError, match=r'cut\.ckpt is damaged or not a PyTorch checkpoint; download'):
        read_state_dict(str(tmp_path / 'cut.ckpt'))  # the message names a global, the file does not
    assert not marker.exists()


def test_an_unreadable_checkpoint_or_state_is_one_line(tmp_path, monkeypatch, checkpoints):
    from helpers import checkpoints as module
    real_open = open

    def unreadable(file, *args, **kwargs):
        if str(file).endswith(('resnet50.ckpt', 'run.state')):
            raise PermissionError(13, 'Permission denied', str(file))
        return real_open(file, *args, **kwargs)
    torch.save({'args': {}, 'epoch': 1, 'model': {}, 'optimizer': {}}, tmp_path / 'run.state')
    monkeypatch.setattr(module, 'open', unreadable, raising=False)  # root reads a mode-000 file anyway
    with pytest.raises(CheckpointError, match=r'^cannot read \S*resnet50\.ckpt \(Permission denied\); '
                                              r'make it readable$'):
        load_checkpoint(resnet(), checkpoints['resnet50'])
    with pytest.raises(CheckpointError, match=r'^cannot read \S*run\.state \(Permission denied\); make it readable$'):
        read_training_state(str(tmp_path / 'run.state'))


def test_a_full_disk_while_torch_writes_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    # torch.save reports ENOSPC as a RuntimeError from its zip writer, not as an OSError
    path = tmp_path / 'fine.ckpt'
    path.write_bytes(b'from an earlier run')

    def full_disk(obj, f):
        f.write(b'half a file')
        raise RuntimeError('[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file '
                           'data/0: file write failed')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(CheckpointError, match=r'cannot write .*fine\.ckpt \(\[enforce fail.*file write failed\)'):
        save_checkpoint({'w': torch.zeros(1)}, str(path))
    assert path.read_bytes() == b'from an earlier run' and os.listdir(tmp_path) == ['fine.ckpt']


@pytest.mark.parametrize('odd, says', [
    (lambda w: w.to_sparse(), 'a sparse tensor'),
    (lambda w: torch.quantize_per_tensor(w, 0.1, 0, torch.qint8), 'a quantized tensor'),
    (lambda w: torch.empty(w.shape, device='meta'), r'a meta tensor \(shapes without weights\)'),
])
def test_entries_that_are_not_plain_weights_are_named_in_one_line(tmp_path, odd, says):
    state = resnet().state_dict()
    state['fc.weight'] = odd(state['fc.weight'])
    torch.save(state, tmp_path / 'odd.ckpt')
    with pytest.raises(CheckpointError, match=f"holds {says} at 'fc.weight', not a plain tensor of weights"):
        load_checkpoint(resnet(), str(tmp_path / 'odd.ckpt'))


def test_a_state_dict_with_a_number_among_its_tensors_says_where(tmp_path):
    state = resnet().state_dict()
    state['epoch'] = 3
    torch.save(state, tmp_path / 'odd.ckpt')
    with pytest.raises(CheckpointError, match="is not a state dict \\(it holds a dict with a int at 'epoch'\\)"):
        load_checkpoint(resnet(), str(tmp_path / 'odd.ckpt'))


# ---- student files and Windows/macOS rules (issues 40, 41) ----

def test_saving_works_where_os_has_no_fchmod(tmp_path, monkeypatch):
    # Windows CPython before 3.13 has no os.fchmod: every save (after the whole epoch) died on it
    monkeypatch.delattr(os, 'fchmod', raising=False)
    umask = os.umask(0o022)
    try:
        save_checkpoint(resnet().state_dict(), str(tmp_path / 'm.ckpt'))
    finally:
        os.umask(umask)
    assert sorted(os.listdir(tmp_path)) == ['m.ckpt']
    assert (tmp_path / 'm.ckpt').stat().st_mode & 0o777 == 0o644


def test_ctrl_c_inside_torchs_writer_is_an_interrupt_not_a_full_disk(tmp_path):
    # torch.save turns a KeyboardInterrupt raised while it writes into a RuntimeError
    from helpers.checkpoints import write_atomic
    path = tmp_path / 'out.ckpt'
    path.write_bytes(b'old run')

    class Interrupting:
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def flush(self):
            self.f.flush()
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), lambda f: torch.save({'w': torch.zeros(1000)}, Interrupting(f)))
    assert path.read_bytes() == b'old run'
    assert os.listdir(tmp_path) == ['out.ckpt']


def test_leftovers_of_a_killed_save_of_the_same_file_are_cleared(tmp_path):
    old = tmp_path / '.m.ckpt.ab12cd34.tmp'
    fresh = tmp_path / '.m.ckpt.ef56gh78.tmp'  # maybe a save running beside this one: kept
    other = tmp_path / '.other.ckpt.ab12cd34.tmp'
    for f in (old, fresh, other):
        f.write_bytes(b'half')
    os.utime(old, (0, 0))
    os.utime(other, (0, 0))
    save_checkpoint({'w': torch.zeros(2)}, str(tmp_path / 'm.ckpt'))
    assert sorted(os.listdir(tmp_path)) == sorted(['m.ckpt', fresh.name, other.name])


def test_a_sha256sums_with_a_byte_order_mark_is_read(tmp_path, checkpoints):
    from helpers.checkpoints import read_sums, sha256
    digest = sha256(checkpoints['resnet50'])
    (tmp_path / 'SHA256SUMS').write_text(f'\ufeff{digest}  resnet50.ckpt\r\n', encoding='utf-8')
    assert read_sums(str(tmp_path)) == {'resnet50.ckpt': digest}


def case_insensitive(monkeypatch, root):
    """Emulates a case-insensitive file system (macOS, Windows) under `root`: a path that does not exist
    as spelt is looked up again letter case aside, component by component."""
    import builtins
    real_stat, real_open = os.stat, builtins.open

    def resolve(path):
        path = os.fspath(path)
        if isinstance(path, int) or not path.startswith(str(root)):
            return path
        place = str(root)
        for part in os.path.relpath(path, root).split(os.sep):
            try:
                match = [n for n in os.listdir(place) if n.lower() == part.lower()]
            except OSError:  # not a folder, or not there
                match = []
            place = os.path.join(place, match[0] if match else part)
        return place
    monkeypatch.setattr(os, 'stat', lambda path, *a, **k: real_stat(resolve(path), *a, **k))
    monkeypatch.setattr(builtins, 'open', lambda path, *a, **k: real_open(resolve(path), *a, **k))


def test_another_letter_case_never_replaces_a_shipped_checkpoint(tmp_path, checkpoints, monkeypatch):
    from helpers import checkpoints as ckpt
    from helpers.checkpoints import sha256
    shipped = tmp_path / 'checkpoints'
    shipped.mkdir()
    (shipped / 'resnet50_cifar10.ckpt').write_bytes(open(checkpoints['resnet50'], 'rb').read())
    (shipped / 'SHA256SUMS').write_text(f"{sha256(shipped / 'resnet50_cifar10.ckpt')}  resnet50_cifar10.ckpt\n")
    monkeypatch.setattr(ckpt, 'SHIPPED_FOLDER', str(shipped))
    case_insensitive(monkeypatch, tmp_path)
    before = (shipped / 'resnet50_cifar10.ckpt').read_bytes()
    for out in ('Checkpoints/Resnet50_cifar10.ckpt', 'CHECKPOINTS/new.ckpt', 'checkpoints/RESNET50_CIFAR10.CKPT'):
        with pytest.raises(CheckpointError, match='will not (overwrite|write)'):
            save_checkpoint(resnet().state_dict(), str(tmp_path / out))
    assert (shipped / 'resnet50_cifar10.ckpt').read_bytes() == before


def test_paths_across_windows_drives_and_a_missing_drive():
    import ntpath

    from helpers import paths
    # os.path.commonpath raises between drives: the guard must say no, not crash
    assert not paths.inside('D:\\results\\m.ckpt', 'C:\\project\\checkpoints', pathmod=ntpath)
    assert not paths.inside('\\\\server\\share\\m.ckpt', 'C:\\project\\checkpoints', pathmod=ntpath)
    assert paths.inside('c:\\Project\\CHECKPOINTS\\m.ckpt', 'C:\\project\\checkpoints', pathmod=ntpath)
    # an unplugged drive: the walk up ends at its root instead of looping forever
    assert paths.nearest_existing('E:\\results\\run1', pathmod=ntpath) is None
    assert paths.first_missing_folder('E:\\results\\run1', pathmod=ntpath) == 'E:\\'


@pytest.fixture(scope='module')
def trained():
    """(state dict, Adam's state dict after one step): what a student's file holds beside its weights."""
    torch.manual_seed(0)
    model = resnet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return model.state_dict(), optimizer.state_dict()


@pytest.mark.parametrize('wrap', [
    # Adam's two moments make this file three times the weights; the course itself uses Adam
    lambda sd, opt: {'epoch': 3, 'state_dict': sd, 'optimizer': opt},
    lambda sd, opt: {'model': sd},
    lambda sd, opt: {'net': sd, 'epoch': 7, 'acc': 91.2},
    lambda sd, opt: {'epoch': 7, 'model_state_dict': sd, 'optimizer_state_dict': opt, 'loss': 0.3},
    lambda sd, opt: {'model.' + k: v for k, v in sd.items()},
    lambda sd, opt: {'_orig_mod.module.' + k: v for k, v in sd.items()},
    lambda sd, opt: {k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')},  # PyTorch 0.4
], ids=['adam', 'model', 'net', 'tutorial', 'model-prefix', 'compiled-ddp-prefix', 'no-num-batches-tracked'])
def test_weights_under_another_key_or_prefix_load(tmp_path, wrap, trained):
    from helpers.checkpoints import load_either
    weights, adam = trained
    torch.save(wrap(weights, adam), tmp_path / 'w.ckpt')
    other = resnet()
    load_checkpoint(other, str(tmp_path / 'w.ckpt'))
    assert torch.equal(other.fc.weight, weights['fc.weight'])
    name, loaded = load_either(str(tmp_path / 'w.ckpt'), '', '')
    assert name == 'resnet50' and torch.equal(loaded.fc.weight, weights['fc.weight'])


def wide_vgg16_head():
    """A VGG16 whose head is 4096 wide: the assignment's keys, other shapes."""
    sd = MODELS['vgg16']().state_dict()
    sd.update({'classifier.1.weight': torch.zeros(4096, 512), 'classifier.1.bias': torch.zeros(4096),
               'classifier.2.weight': torch.ones(4096), 'classifier.2.bias': torch.zeros(4096),
               'classifier.2.running_mean': torch.zeros(4096), 'classifier.2.running_var': torch.ones(4096),
               'classifier.5.weight': torch.zeros(10, 4096)})
    return sd


def test_other_vgg16s_say_which_layers_differ_and_advice_never_goes_in_a_circle(tmp_path):
    from vgg16_full import VGG, cfg, make_layers
    torch.save(wide_vgg16_head(), tmp_path / 'wide.ckpt')
    with pytest.raises(CheckpointError) as to_resnet:
        load_checkpoint(resnet(), str(tmp_path / 'wide.ckpt'))
    assert '--model vgg16' not in str(to_resnet.value)
    with pytest.raises(CheckpointError, match=r"does not fit VGG16: 7 of other shapes \(classifier.1.weight is "
                                              r"\(4096, 512\), the model's \(512, 512\);.*another VGG16"):
        load_checkpoint(MODELS['vgg16'](), str(tmp_path / 'wide.ckpt'))
    torch.save(VGG(make_layers(cfg['D'], batch_norm=True)).state_dict(), tmp_path / 'bn.ckpt')
    with pytest.raises(CheckpointError, match=r'does not fit VGG16: .*VGG16 with BatchNorm in its features'):
        load_checkpoint(MODELS['vgg16'](), str(tmp_path / 'bn.ckpt'))


def test_weights_that_overflowed_float16_are_named_as_such(tmp_path):
    sd = resnet().state_dict()
    sd['fc.weight'] = (sd['fc.weight'] * 2 ** 20).half()  # the shipped weights are scaled this far up
    torch.save(sd, tmp_path / 'half.ckpt')
    with pytest.raises(CheckpointError, match=r"overflowed float16 .*save in float32 or bf16"):
        load_checkpoint(resnet(), str(tmp_path / 'half.ckpt'))


def test_train_states_torchscript_and_zips_of_images_are_named(tmp_path):
    import zipfile
    torch.save({'args': {}, 'epoch': 3, 'model': resnet().state_dict(), 'optimizer': {}}, tmp_path / 'run.ckpt.state')
    with pytest.raises(CheckpointError, match=r"run.ckpt.state is train.py's training state, not a checkpoint; "
                                              r"pass the checkpoint train.py wrote \(\S*run.ckpt\)"):
        load_checkpoint(resnet(), str(tmp_path / 'run.ckpt.state'))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / 'scripted.pt'))
    with pytest.raises(CheckpointError, match=r'is a TorchScript model \(torch.jit.save\), not a state dict'):
        load_checkpoint(resnet(), str(tmp_path / 'scripted.pt'))
    with zipfile.ZipFile(tmp_path / 'images.zip', 'w') as z:
        z.writestr('train/cat/0001.png', b'\x89PNG not really')
    with pytest.raises(CheckpointError, match=r"is a zip archive of other files \(1, e.g. 'train/cat/0001.png'\), "
                                              r"not a PyTorch checkpoint"):
        load_checkpoint(resnet(), str(tmp_path / 'images.zip'))


def test_long_reasons_are_cut_at_a_word():
    from helpers.errors import reason
    text = reason(RuntimeError('averyveryverylongword ' * 30))
    assert len(text) <= 200 and text.endswith(' ...')
    assert all(w == 'averyveryverylongword' for w in text[:-4].split())


def test_errors_module_imports_no_other_helper():
    # errors.py and checkpoints.py imported each other (for the list of saved files): one place now
    import ast
    tree = ast.parse(open(os.path.join(os.path.dirname(__file__), '..', 'helpers', 'errors.py')).read())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith('helpers')]
