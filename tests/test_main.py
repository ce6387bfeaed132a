"""main.py run as a student runs it, on tiny data made by the tests."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from checkpoint_io import load_checkpoint
from conftest import ROOT, run_main
from models import MODELS

ACCURACY = re.compile(r'^Accuracy of the model on the test images: (\d+(\.\d+)?) %$', re.M)
STEP = re.compile(r'^Epoch \[1/1\], Step \[100/100\] Loss: \d+\.\d{4}$', re.M)


@pytest.mark.parametrize('plain', [False, True])
def test_fine_tune_on_an_image_folder(image_folder, checkpoints, tmp_path, plain):
    out = tmp_path / 'fine.ckpt'
    # 300 images in batches of 3: the assignment's 100-step loss line appears
    r = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 3,
                 '--out', out, '--seed', 0, *(['--plain'] if plain else []))
    assert r.returncode == 0, r.stderr
    assert STEP.search(r.stdout), r.stdout
    assert ACCURACY.search(r.stdout).group(0) == r.stdout.strip().splitlines()[-1]
    assert len(re.findall(r'^ +\w+: +\d+\.\d %$', r.stdout, re.M)) == 10  # per-class accuracy
    model = MODELS['resnet50']()
    load_checkpoint(model, str(out))
    before = torch.load(checkpoints['resnet50'])
    assert not torch.equal(model.fc.weight.detach(), before['fc.weight'])  # it did train


def test_vgg16_on_torchvisions_layout_then_eval_only_of_the_result(torchvision_root, checkpoints, tmp_path):
    out = tmp_path / 'vgg.ckpt'
    r = run_main('--model', 'vgg16', '--data', torchvision_root, '--checkpoint', checkpoints['vgg16'],
                 '--batch-size', 2, '--out', out)
    assert r.returncode == 0, r.stderr
    assert STEP.search(r.stdout)
    trained = float(ACCURACY.search(r.stdout).group(1))
    r = run_main('--model', 'vgg16', '--data', torchvision_root, '--checkpoint', out, '--eval-only')
    assert r.returncode == 0, r.stderr
    assert 'Step' not in r.stdout
    # testing the saved model again gives the same number: what was saved is what was tested
    assert float(ACCURACY.search(r.stdout).group(1)) == trained


def test_fast_and_plain_pipelines_agree_on_the_same_weights(image_folder, checkpoints):
    results = [run_main('--data', image_folder, '--checkpoint', checkpoints['vgg16'], '--model', 'vgg16',
                        '--eval-only', *flag) for flag in ([], ['--plain'])]
    assert all(r.returncode == 0 for r in results), results[0].stderr + results[1].stderr
    assert results[0].stdout.splitlines()[1:] == results[1].stdout.splitlines()[1:]


def test_help_lists_the_flags():
    r = run_main('--help')
    for flag in ('--model', '--checkpoint', '--data', '--epochs', '--lr', '--batch-size', '--device',
                 '--eval-only', '--out', '--seed'):
        assert flag in r.stdout
    assert r.returncode == 0


@pytest.mark.parametrize('args, message', [
    (['--epochs', '0'], '--epochs: must be at least 1'),
    (['--epochs', '-3'], '--epochs: must be at least 1'),
    (['--lr', 'fast'], "--lr: 'fast' is not a number"),
    (['--lr', '-1'], '--lr: must be a positive number'),
    (['--model', 'resnet18'], "invalid choice: 'resnet18'"),
    (['--batch-size', '0'], '--batch-size: must be at least 1'),
])
def test_bad_flags_are_one_line(args, message):
    r = run_main(*args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def one_line_error(r, pattern):
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 1 and re.search(pattern, errors[0]), r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_cuda_without_a_gpu(image_folder, checkpoints):
    one_line_error(run_main('--device', 'cuda', '--data', image_folder, '--checkpoint', checkpoints['resnet50']),
                   'sees no CUDA GPU here; use --device cpu')


def test_data_and_checkpoint_mistakes_are_one_line(image_folder, checkpoints, tmp_path):
    one_line_error(run_main('--data', image_folder, '--checkpoint', tmp_path / 'typo.ckpt'),
                   'checkpoint not found: .*typo.ckpt')
    one_line_error(run_main('--data', image_folder, '--checkpoint', checkpoints['vgg16']),
                   'is a VGG16 checkpoint, but the model is ResNet50_layer4')
    (tmp_path / 'cut.ckpt').write_bytes(open(checkpoints['resnet50'], 'rb').read()[:5000])
    one_line_error(run_main('--data', image_folder, '--checkpoint', tmp_path / 'cut.ckpt'), 'damaged or truncated')
    one_line_error(run_main('--data', tmp_path / 'empty', '--checkpoint', checkpoints['resnet50']),
                   'no CIFAR-10 in .*could not be downloaded.*image folder')


def test_the_default_model_is_resnet50_with_its_shipped_path(tmp_path):
    # run from an empty folder: the relative default path is not found, and the message says where it looked
    r = run_main('--data', tmp_path, '--eval-only', cwd=tmp_path)
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert 'resnet50_cifar10.ckpt' in r.stderr or 'CIFAR-10' in r.stderr


def test_ctrl_c_exits_130_and_keeps_the_earlier_output(image_folder, checkpoints, tmp_path):
    out = tmp_path / 'fine.ckpt'
    out.write_bytes(b'from an earlier run')
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), '--data', image_folder,
                          '--checkpoint', checkpoints['resnet50'], '--out', out, '--epochs', '50',
                          '--batch-size', '3'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    p.stdout.readline()  # data loaded, training about to start
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert 'interrupted' in stderr and 'Traceback' not in stderr
    assert out.read_bytes() == b'from an earlier run'
    assert sorted(os.listdir(tmp_path)) == ['fine.ckpt']


def test_vgg16_cannot_train_on_batches_of_one(image_folder, checkpoints):
    one_line_error(run_main('--model', 'vgg16', '--batch-size', 1, '--data', image_folder,
                            '--checkpoint', checkpoints['vgg16']), '--batch-size 1 cannot train VGG16')
