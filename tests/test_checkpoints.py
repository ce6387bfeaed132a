"""Checkpoints as students bring them, and files as the package writes them."""
import collections
import json
import os
import shutil
import struct
import warnings

import pytest
import torch
import torch.nn as nn

from helpers import paths
from helpers.checkpoints import HINT, MODELS, PRETRAINED, load, load_either, name_of, read, save, title_of
from conftest import make_image_folder, symlink_or_skip
from scripts import ROOT, main
from test_main import MODEL, edited
from vgg16_full import VGG, cfg, make_layers


def error_of(call, *args):
    with pytest.raises(SystemExit) as e:
        call(*args)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


@pytest.fixture(scope='module')
def resnet_state():
    torch.manual_seed(0)
    return MODELS['resnet50']().state_dict()


@pytest.mark.parametrize('wrap', [
    lambda s: {'state_dict': s, 'epoch': 3},
    lambda s: {'model': s, 'optimizer': {'state': {}, 'param_groups': []}},
    lambda s: {'net': s, 'acc': 91.0},
    lambda s: {'model_state_dict': s, 'optimizer_state_dict': {'state': {}, 'param_groups': []}, 'epoch': 1},
    lambda s: {'state_dict': s, 'optimizer': {'state': {}}, 'epoch': 3, 'args': {'lr': 0.1}},  # another project's
    lambda s: {'model': s, 'ema': {k: v + 1 if v.is_floating_point() else v for k, v in s.items()}},
    lambda s: {f'module.{k}': v for k, v in s.items()},  # DataParallel
    lambda s: {f'_orig_mod.module.{k}': v for k, v in s.items()},  # torch.compile over DataParallel
    lambda s: {k: v for k, v in s.items() if not k.endswith('num_batches_tracked')},  # PyTorch 0.4's files
    lambda s: {k: v.half() if v.is_floating_point() else v for k, v in s.items()},  # saved in half precision
], ids=['state_dict', 'model+optimizer', 'net', 'tutorial', 'with args', 'model+ema', 'module.', '_orig_mod.',
        'no num_batches', 'float16'])
def test_the_checkpoints_students_save_load(tmp_path, resnet_state, wrap):
    torch.save(wrap(resnet_state), tmp_path / 'x.pth')
    model = MODELS['resnet50']()
    load(model, str(tmp_path / 'x.pth'))
    saved = wrap(resnet_state)
    saved = next((v for v in saved.values() if isinstance(v, dict) and v.get('fc.bias') is not None), saved)
    assert all(torch.equal(model.state_dict()[k.split('module.')[-1]], v.float()) for k, v in saved.items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_whole_pickled_model_is_refused_and_never_run(tmp_path):
    torch.save(MODELS['vgg16'](), tmp_path / 'model.pt')  # torch.save(model): a pickled class
    assert 'holds pickled code or objects' in error_of(load, MODELS['vgg16'](), str(tmp_path / 'model.pt'))


@pytest.mark.parametrize('content, says', [
    (b'', 'is not a PyTorch checkpoint, or is damaged'),
    (b'accuracy 91 %\n', 'is not a PyTorch checkpoint, or is damaged'),
    ('truncated', 'is not a PyTorch checkpoint, or is damaged'),
    ({'epoch': 3, 'lr': 0.1}, "is not a state dict (it holds a dict of 'epoch', 'lr')"),
    ({'args': {}, 'epoch': 3, 'optimizer': {}, 'model': {}, 'history': []}, "is train.py's training state"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, resnet_state, content, says):
    path = tmp_path / 'x.ckpt'
    if content == 'truncated':
        torch.save(resnet_state, path)
        path.write_bytes(path.read_bytes()[:100000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert says in error_of(load, MODELS['resnet50'](), str(path))


def test_missing_checkpoints_and_folders_are_named(tmp_path):
    assert 'checkpoint not found: ' in error_of(load, MODELS['vgg16'](), str(tmp_path / 'no.ckpt'))
    assert 'is a folder; give a checkpoint file in it' in error_of(load, MODELS['vgg16'](), str(tmp_path))


def test_the_other_models_checkpoint_and_other_vgg16s_say_what_to_do(tmp_path, resnet_state):
    torch.save(resnet_state, tmp_path / 'r.ckpt')
    said = error_of(load, MODELS['vgg16'](), str(tmp_path / 'r.ckpt'))
    assert 'is a ResNet50_layer4 checkpoint, and the model is VGG16' in said and 'vgg16_cifar10.ckpt' in said
    torch.save(VGG(make_layers(cfg['D'], batch_norm=True)).state_dict(), tmp_path / 'bn.ckpt')
    said = error_of(load, MODELS['vgg16'](), str(tmp_path / 'bn.ckpt'))
    assert 'does not fit VGG16' in said and 'BatchNorm in its features' in said


def test_nan_weights_are_neither_loaded_nor_saved_and_the_earlier_file_stays(tmp_path, resnet_state):
    bad = collections.OrderedDict((k, v.clone()) for k, v in resnet_state.items())
    bad['fc.weight'][0, 0] = float('nan')
    torch.save(bad, tmp_path / 'nan.ckpt')
    assert 'holds NaN or infinite weights' in error_of(load, MODELS['resnet50'](), str(tmp_path / 'nan.ckpt'))
    save(resnet_state, str(tmp_path / 'x.ckpt'))
    before = (tmp_path / 'x.ckpt').read_bytes()
    assert 'not saved: the weights hold NaN' in error_of(save, bad, str(tmp_path / 'x.ckpt'))
    assert (tmp_path / 'x.ckpt').read_bytes() == before


def shipped_folder(tmp_path):
    """A copy of checkpoints/ holding only its SHA256SUMS."""
    (tmp_path / 'checkpoints').mkdir()
    shutil.copy(os.path.join(ROOT, 'checkpoints', 'SHA256SUMS'), tmp_path / 'checkpoints' / 'SHA256SUMS')
    return tmp_path / 'checkpoints'


def test_a_student_fine_tune_over_a_shipped_checkpoint_is_kept_and_the_way_back_named(tmp_path):
    """A file that differs from its SHA256SUMS line is often the student's own: no advice may overwrite it."""
    file = shipped_folder(tmp_path) / 'vgg16_cifar10.ckpt'
    tuned = MODELS['vgg16']().state_dict()  # saved over the shipped file
    torch.save(tuned, file)
    said = error_of(load, MODELS['vgg16'](), str(file))
    keep, back = said.split('after the move')
    assert 'differs from the shipped file' in keep and 'git checkout' not in keep
    assert 'move it elsewhere, e.g. to outputs/mine.ckpt, and pass --checkpoint outputs/mine.ckpt' in keep
    assert f'`git checkout -- {file}` (or a fresh clone) gives the shipped file back' in back
    shutil.move(file, tmp_path / 'mine.ckpt')  # as the line says: then it loads as the student's own
    mine = load(MODELS['vgg16'](), str(tmp_path / 'mine.ckpt'))
    assert torch.equal(mine['features.0.bias'], tuned['features.0.bias'])


def test_a_prefixed_vgg16_checkpoint_given_to_resnet_is_named_vgg16(tmp_path):
    torch.save({f'_orig_mod.module.{k}': v for k, v in MODELS['vgg16']().state_dict().items()}, tmp_path / 'v.ckpt')
    said = error_of(load, MODELS['resnet50'](), str(tmp_path / 'v.ckpt'))
    assert 'is a VGG16 checkpoint, and the model is ResNet50_layer4' in said and 'or choose VGG16' in said
    assert load_either(str(tmp_path / 'v.ckpt'), HINT)[0] == 'vgg16'


def test_a_safetensors_file_says_how_to_convert_it(tmp_path):
    """A row of its own in checkpoints.FORMATS, by how the file begins (its header's length, then JSON)."""
    header = json.dumps({'fc.bias': {'dtype': 'F32', 'shape': [10], 'data_offsets': [0, 40]}}).encode()
    (tmp_path / 'model.safetensors').write_bytes(struct.pack('<Q', len(header)) + header + bytes(40))
    said = error_of(load, MODELS['resnet50'](), str(tmp_path / 'model.safetensors'))
    assert 'is a safetensors file: torch.save(safetensors.torch.load_file(FILE), PATH) converts it' in said
    assert 'damaged' not in said


def test_a_git_lfs_pointer_says_git_lfs_pull(tmp_path):
    """A row of its own in checkpoints.FORMATS (a clone made without Git LFS), named before SHA256SUMS's check."""
    file = shipped_folder(tmp_path) / 'resnet50_cifar10.ckpt'
    file.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:495d01fd2c101495b881920c1b3bd96e5edf60bc'
                    '62b1fee6d728905328bb77ec\nsize 29794325\n')
    said = error_of(load, MODELS['resnet50'](), str(file))
    assert 'is a Git LFS pointer, not the checkpoint' in said and 'run `git lfs pull`' in said


def test_a_torchscript_file_says_how_to_save_its_state_dict_without_a_warning(tmp_path):
    """A row of its own in checkpoints.FORMATS: a zip as torch.save's, told by the constants.pkl in it."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit's deprecation
        torch.jit.save(torch.jit.script(nn.Linear(3, 10)), tmp_path / 'm.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # torch.load's would be a UserWarning with a source path
        said = error_of(load, MODELS['resnet50'](), str(tmp_path / 'm.pt'))
    assert 'is a TorchScript archive' in said and 'torch.save(torch.jit.load(FILE).state_dict(), PATH)' in said
    assert 'is a TorchScript archive' in error_of(read, 'it', HINT, (tmp_path / 'm.pt').read_bytes())


def test_a_dataparallel_model_in_main_py_is_the_assignments_and_loads_the_shipped_weights(tmp_path):
    vgg = MODELS['vgg16']()
    compiled = nn.Module()  # as torch.compile's wrapper holds it (importing torch._dynamo takes seconds)
    compiled._orig_mod = vgg
    for wrapped in (nn.DataParallel(vgg), compiled, nn.DataParallel(compiled)):
        assert name_of(wrapped) == 'vgg16' and title_of(wrapped) == 'VGG16'
    shipped = load(nn.DataParallel(compiled), os.path.join(ROOT, PRETRAINED['vgg16']))
    assert all(torch.equal(v.cpu(), shipped[k]) for k, v in vgg.state_dict().items())  # DataParallel: on a GPU
    script = edited(tmp_path, (MODEL, 'model = nn.DataParallel(ResNet50_layer4())\n'))
    r = main('--data', make_image_folder(tmp_path / 'tiny', 1, 1), '--eval-only', script=script)
    assert r.returncode == 0 and r.stdout.startswith(f'resnet50 from {PRETRAINED["resnet50"]}'), r.stderr


def test_a_save_that_fails_midway_leaves_the_earlier_file_and_no_temporary_file(tmp_path, resnet_state, monkeypatch):
    save(resnet_state, str(tmp_path / 'x.ckpt'))
    before = (tmp_path / 'x.ckpt').read_bytes()

    def full_disk(obj, f):
        f.write(b'half')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    assert 'cannot write' in error_of(save, resnet_state, str(tmp_path / 'x.ckpt'))
    assert (tmp_path / 'x.ckpt').read_bytes() == before and os.listdir(tmp_path) == ['x.ckpt']


def test_saved_files_get_the_usual_permissions_and_load_anywhere(tmp_path):
    model = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    save(model.state_dict(), str(tmp_path / 'new' / 'c.ckpt'))  # its folder is made
    state = torch.load(tmp_path / 'new' / 'c.ckpt', weights_only=True)
    assert state['weight'].is_contiguous()
    probe = tmp_path / 'probe'
    probe.write_bytes(b'')  # what open() makes here, under this platform's rules and umask
    assert os.stat(tmp_path / 'new' / 'c.ckpt').st_mode & 0o777 == os.stat(probe).st_mode & 0o777


def test_nothing_is_written_into_the_shipped_folder_however_it_is_spelt(tmp_path):
    spellings = [os.path.join(ROOT, 'checkpoints', 'x.ckpt'), os.path.join(ROOT, 'tests', '..', 'checkpoints', 'x.pt')]
    if os.path.exists(os.path.join(ROOT, 'CHECKPOINTS')):  # a case-insensitive file system (macOS, Windows)
        spellings.append(os.path.join(ROOT, 'CHECKPOINTS', 'x.ckpt'))
    for path in spellings:
        assert 'holds only the shipped checkpoints' in error_of(paths.check_output, path, '--out')
    symlink_or_skip(os.path.join(ROOT, 'checkpoints'), tmp_path / 'link')
    said = error_of(paths.check_output, str(tmp_path / 'link' / 'x.ckpt'), '--out')
    assert 'holds only the shipped checkpoints' in said


def test_shown_paths_make_hidden_characters_visible():
    assert paths.shown('a b.ckpt') == 'a b.ckpt'
    assert paths.shown('model.ckpt ') == "'model.ckpt '" and paths.shown('') == "''"
    assert paths.shown('./checkpoints\resnet.ckpt') == repr('./checkpoints\resnet.ckpt')  # '\r' typed in Python
