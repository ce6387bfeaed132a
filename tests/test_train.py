"""train.py, one test per case a maintainer meets. Each training is of seconds on tiny data: ResNet50_layer4
or VGG16 on the 50 or 200 images of an image folder made here, in this process (tests/scripts.py)."""
import copy
import os
import re
import signal

import pytest
import torch

from conftest import make_image_folder
from helpers import checkpoints
from helpers.checkpoints import MODELS
from helpers.weight_scaling import looks_scaled, scale_for_adam, unscale
from scripts import ROOT, one_line_error, train
from vgg16_full import VGG, cfg, make_layers

CPU = ['--device', 'cpu', '--batch-size', 25]
SMALL = [*CPU, '--holdout', 50]  # 50 training images, 2 steps an epoch; 50 to validate on


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('data'), train_per_class=10, test_per_class=2)


@pytest.fixture(scope='module')
def trained(folder, tmp_path_factory):
    """A 1-epoch ResNet50_layer4 run with the defaults: its checkpoint, state and log."""
    out = tmp_path_factory.mktemp('run') / 'resnet50.ckpt'
    r = train('--model', 'resnet50', '--data', folder, '--epochs', 1, *SMALL, '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, f'{out}.state', r.stdout


def weights(path):
    return torch.load(path, weights_only=True)


def test_flag_mistakes_are_one_line_with_exit_2(tmp_path):
    out = ['--out', tmp_path / 'x.ckpt']
    for given, message in ((['--model', 'vgg16', '--epochs', 0], '--epochs: must be at least 1, not 0'),
                           (['--model', 'resnet50', '--momentum', 1], '--momentum: must be at least 0 and below 1'),
                           (['--model', 'resnet50', '--lr', 'nan'], "--lr: must be at least"),
                           (['--model', 'resnet50', '--batch-norm'], '--batch-norm is for --model vgg16'),
                           (['--model', 'resnet50', '--epochs', 3, '--swa-from', 4], '--swa-from 4 is after the last'),
                           (['--epochs', 3], '--model and --out are required')):
        one_line_error(train(*given, *out), re.escape(message), 2)


def test_out_is_refused_when_it_is_the_init_file_or_in_checkpoints(tmp_path):
    # before any work: there is no data folder at all
    start = tmp_path / 'start.ckpt'
    start.write_bytes(b'kept')
    common = ['--model', 'resnet50', '--data', tmp_path / 'no-data']
    one_line_error(train(*common, '--init', start, '--out', start), 'is the file this run starts from')
    one_line_error(train(*common, '--out', os.path.join(ROOT, 'checkpoints', 'resnet50_cifar10.ckpt')),
                   'holds only the shipped checkpoints')
    one_line_error(train(*common, '--out', tmp_path / 'model.txt'), 'give a file name ending in .ckpt')
    assert start.read_bytes() == b'kept'


def test_resume_refuses_a_recipe_flag(tmp_path):
    state = tmp_path / 'run.ckpt.state'
    torch.save({'args': {'model': 'resnet50', 'lr': 0.1, 'epochs': 30, 'holdout': 0}, 'epoch': 1}, state)
    for flag, value in (('--lr', 0.5), ('--epochs', 40), ('--holdout', 8)):
        one_line_error(train('--resume', state, flag, value), f"{flag}: --resume goes on with the run's own settings")
    one_line_error(train('--resume', tmp_path / 'none.state'), 'training state not found')
    (tmp_path / 'other.state').write_bytes(b'not a state')
    one_line_error(train('--resume', tmp_path / 'other.state'), 'is not a training state train.py can continue')


def test_sam_steps_with_the_gradient_at_the_weights_moved_uphill_and_puts_them_back():
    import train as script
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    probe = copy.deepcopy(net)  # by hand: the gradient at w + rho g / |g|
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    with torch.no_grad():
        for q, p in zip(probe.parameters(), net.parameters()):
            q.add_(0.5 * p.grad / norm)
    torch.nn.functional.cross_entropy(probe(x), y).backward()
    before = copy.deepcopy(net)
    script.sam_second_pass(net, lambda: torch.nn.functional.cross_entropy(net(x), y), 0.5)
    for p, q, w in zip(net.parameters(), probe.parameters(), before.parameters()):
        assert torch.equal(p, w) and torch.allclose(p.grad, q.grad, atol=1e-6)  # moved back; the probe's gradient
    assert torch.equal(net[1].running_mean, before[1].running_mean)  # the probe's pass left BatchNorm's statistics


@pytest.mark.slow
def test_a_run_writes_a_scaled_checkpoint_that_main_py_loads(trained):
    out, state, stdout = trained
    model = MODELS['resnet50']()
    checkpoints.load(model, out)  # main.py's loader, with its checks
    assert looks_scaled(model) and weights(out)['fc.weight'].dtype == torch.float16
    assert 'saved model: validation accuracy' in stdout
    history = weights(state)['history']  # the per-epoch log, to plot
    assert [h['epoch'] for h in history] == [1] and {'train_loss', 'val_accuracy', 'lr', 'seconds'} <= history[0].keys()


@pytest.mark.slow
def test_resume_after_stop_after_gives_the_weights_of_an_uninterrupted_run(folder, tmp_path):
    # on the CPU a run repeats to the last bit: the generators, schedule and optimizer are all in the state
    common = ['--model', 'resnet50', '--data', folder, '--epochs', 2, *SMALL]
    assert train(*common, '--out', tmp_path / 'straight.ckpt').returncode == 0
    r = train(*common, '--out', tmp_path / 'pieces.ckpt', '--stop-after', 1)
    assert r.returncode == 0 and 'stopped after epoch 1 of 2' in r.stdout, r.stderr[-2000:]
    assert not (tmp_path / 'pieces.ckpt').exists()
    r = train('--resume', tmp_path / 'pieces.ckpt.state')
    assert r.returncode == 0 and 'epoch 1/2' not in r.stdout, r.stderr[-2000:]
    a, b = weights(tmp_path / 'straight.ckpt'), weights(tmp_path / 'pieces.ckpt')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight, pieces = (weights(tmp_path / f'{n}.ckpt.state')['history'] for n in ('straight', 'pieces'))
    assert [(h['train_loss'], h['lr']) for h in pieces] == [(h['train_loss'], h['lr']) for h in straight]


@pytest.mark.slow
def test_ctrl_c_during_train_py_says_how_to_go_on(folder, tmp_path, monkeypatch):
    def save_then_ctrl_c(obj, path, save=checkpoints.save):
        save(obj, path)
        signal.raise_signal(signal.SIGINT)  # once epoch 1's state is saved
    monkeypatch.setattr(checkpoints, 'save', save_then_ctrl_c)
    r = train('--model', 'resnet50', '--data', folder, '--epochs', 2, *SMALL, '--out', tmp_path / 'x.ckpt')
    state = tmp_path / 'x.ckpt.state'
    said = f'{state} (no file is left half-written); go on: python train.py --resume {state}'  # after earlier saves
    assert r.returncode == 130 and r.stderr.splitlines()[-1].endswith(said), r.stderr  # of this test process


@pytest.mark.slow
def test_swa_saves_the_average_of_the_averaged_epochs_with_batchnorm_recomputed(folder, tmp_path):
    out, state = tmp_path / 'swa.ckpt', tmp_path / 'swa.ckpt.state'
    common = ['--model', 'resnet50', '--data', folder, '--epochs', 2, '--swa-from', 1, *SMALL,
              '--no-rescale', '--out', out]
    assert train(*common, '--stop-after', 1).returncode == 0
    first = weights(state)['model']
    r = train('--resume', state)  # the average so far is in the state
    assert r.returncode == 0 and 'using the average of epochs 1 to 2' in r.stdout, r.stderr[-2000:]
    second, saved = weights(state)['model'], weights(out)
    for name, _ in MODELS['resnet50']().named_parameters():
        assert torch.allclose(saved[name], (first[name] + second[name]) / 2, rtol=1e-5, atol=1e-7), name
    # BatchNorm's statistics are the averaged weights' own, measured again on the training images
    assert not torch.allclose(saved['layer1.1.running_mean'], second['layer1.1.running_mean'])
    lrs = [h['lr'] for h in weights(state)['history']]
    assert lrs[0] == lrs[1] > 0  # held


@pytest.mark.slow
def test_batch_norm_vgg16_folds_into_the_assignments_vgg16(folder, tmp_path):
    out = tmp_path / 'vgg.ckpt'
    r = train('--model', 'vgg16', '--batch-norm', '--data', folder, '--epochs', 1, *SMALL,
              '--no-rescale', '--out', out)
    assert r.returncode == 0 and 'VGG16 with BatchNorm' in r.stdout, r.stderr[-2000:]
    trained_bn = VGG(make_layers(cfg['D'], batch_norm=True))
    trained_bn.load_state_dict(weights(f'{out}.state')['model'])
    folded = MODELS['vgg16']()
    checkpoints.load(folded, out)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded.eval()(x), trained_bn.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_diverged_run_saves_nothing(folder, tmp_path):
    out = tmp_path / 'x.ckpt'
    r = train('--model', 'resnet50', '--data', folder, '--epochs', 1, *SMALL, '--lr', 1e30, '--out', out)
    one_line_error(r, r'not saved: the weights hold NaN .*use a smaller --lr')
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_init_starts_from_a_scaled_checkpoint_scaled_back(folder, tmp_path):
    # a learning rate too small to move anything: the run saves the weights it started from
    torch.manual_seed(3)
    model = MODELS['resnet50']()
    torch.save(scale_for_adam(model).state_dict(), tmp_path / 'shipped.ckpt')
    start = unscale(model)
    r = train('--model', 'resnet50', '--data', folder, '--epochs', 1, *SMALL, '--init', tmp_path / 'shipped.ckpt',
              '--lr', 1e-12, '--no-rescale', '--out', tmp_path / 'more.ckpt')
    assert r.returncode == 0, r.stderr[-2000:]
    saved = weights(tmp_path / 'more.ckpt')
    for key, p in start.named_parameters():
        assert torch.allclose(saved[key], p, rtol=1e-5, atol=1e-7), key
