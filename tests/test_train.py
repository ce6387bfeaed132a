"""train.py: checkpoints main.py evaluates, resuming, held-out validation, bf16, torchrun."""
import contextlib
import copy
import json
import os
import re
import shutil

import pytest
import torch

from helpers.checkpoints import load_checkpoint
from helpers.data import CLASSES, decode, normalize
from helpers.devices import cpu_has_native_bf16
from helpers.model_table import MODELS, PRETRAINED
from helpers.weight_scaling import scale_for_adam, unscale
from scripts import ROOT, main, one_line_error, run, train


def accuracy_of(line_prefix, text):
    line = next(line for line in text.splitlines() if line.startswith(line_prefix))
    return float(line.split('accuracy ')[1].split(' %')[0])


@pytest.mark.slow
def test_vgg16_trained_with_batchnorm_learns_and_main_gets_the_same_accuracy(image_folder, tmp_path):
    # the synthetic classes differ in colour: a short run must beat chance (10 %) clearly
    out = tmp_path / 'trained.ckpt'
    r = train('--model', 'vgg16', '--batch-norm', '--data', image_folder, '--holdout', 0, '--epochs', 4,
              '--batch-size', 20, '--lr', 0.05, '--device', 'cpu', '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'VGG16 with BatchNorm, world size 1' in r.stdout and out.exists()
    saved = accuracy_of('saved model: validation accuracy', r.stdout)
    assert saved >= 35, r.stdout
    # what is saved is the assignment's BN-free VGG16, scaled: main.py tests it to the same number
    r = main('--model', 'vgg16', '--data', image_folder, '--checkpoint', out, '--eval-only', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f'Accuracy of the model on the test images: {saved} %'


@pytest.mark.slow
def test_two_epochs_stop_resume_two_more_equal_four_straight(image_folder, tmp_path):
    # no test split at all: --holdout validates on training images kept out, so the test split is never read
    data = tmp_path / 'data'
    shutil.copytree(os.path.join(image_folder, 'train'), data / 'train')
    # on the CPU, where a run is repeatable to the last bit
    common = ['--model', 'resnet50', '--data', data, '--holdout', 50, '--epochs', 4, '--batch-size', 64,
              '--cutout', 8, '--device', 'cpu', '--no-rescale', '--full-precision']
    r = train(*common, '--out', tmp_path / 'straight.ckpt')
    assert r.returncode == 0, r.stderr
    assert '250 training images (Cutout 8x8), 50 validation images (held out of the training split)' in r.stdout
    r = train(*common, '--out', tmp_path / 'pieces.ckpt', '--stop-after', 2)
    assert r.returncode == 0, r.stderr
    assert 'stopped after epoch 2 of 4' in r.stdout and not (tmp_path / 'pieces.ckpt').exists()
    state = tmp_path / 'pieces.ckpt.state'
    assert [h['epoch'] for h in json.loads((tmp_path / 'pieces.ckpt.state.json').read_text())] == [1, 2]
    r = train('--resume', state)
    assert r.returncode == 0, r.stderr
    assert f'resuming {state} after epoch 2' in r.stdout and 'epoch 1/4' not in r.stdout
    a, b = torch.load(tmp_path / 'straight.ckpt'), torch.load(tmp_path / 'pieces.ckpt')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / 'pieces.ckpt.state.json').read_text())
    assert [h['epoch'] for h in log] == [1, 2, 3, 4]  # the per-epoch log survives resuming
    straight = json.loads((tmp_path / 'straight.ckpt.state.json').read_text())
    for key in ('train_loss', 'val_accuracy', 'lr'):
        assert [h[key] for h in log] == [h[key] for h in straight], key
    # resuming a finished run trains nothing and writes the same checkpoint again (say, after it was deleted)
    (tmp_path / 'pieces.ckpt').unlink()
    r = train('--resume', state)
    assert r.returncode == 0 and 'had finished its 4 epochs' in r.stdout and 'epoch 4/4' not in r.stdout, r.stderr
    b = torch.load(tmp_path / 'pieces.ckpt')
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_log_says_whether_training_runs_in_bf16(image_folder, tmp_path):
    # --bf16 off is float32 everywhere; on a CPU without native bf16 the log says why auto is too
    auto, off = (('bf16 autocast (the CPU has AVX512-BF16 or AMX)', 'float32') if cpu_has_native_bf16() else
                 ('float32 (the CPU has no native bf16)',) * 2)
    for flag, says in (('auto', auto), ('off', off)):
        r = train('--model', 'resnet50', '--data', image_folder, '--epochs', 1, '--batch-size', 100,
                     '--holdout', 0, '--device', 'cpu', '--bf16', flag, '--out', tmp_path / f'{flag}.ckpt')
        assert r.returncode == 0, r.stderr
        assert f'device cpu, {says},' in r.stdout.splitlines()[0]


@pytest.mark.slow
def test_train_under_torchrun_with_two_processes(image_folder, tmp_path):
    out = tmp_path / 'ddp.ckpt'
    # on the CPU explicitly: on a machine with one GPU, two processes cannot each have one
    r = run('-m torch.distributed.run', '--standalone', '--nproc_per_node', 2, os.path.join(ROOT, 'train.py'),
            '--model', 'resnet50', '--data', image_folder, '--epochs', 1, '--batch-size', 50, '--holdout', 0,
            '--device', 'cpu', '--out', out, env={'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'world size 2' in r.stdout and out.exists()
    r = main('--data', image_folder, '--checkpoint', out, '--eval-only')
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_run_of_four_steps_in_all_trains(image_folder, tmp_path):
    # 300 images, batch 150, 2 epochs: a one-step warm-up, where OneCycleLR itself divides by zero
    r = train('--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 2, '--batch-size', 150,
              '--device', 'cpu', '--out', tmp_path / 'four.ckpt')
    assert r.returncode == 0, r.stderr[-2000:]
    lrs = [h['lr'] for h in json.loads((tmp_path / 'four.ckpt.state.json').read_text())]
    assert lrs[0] < lrs[1] <= 0.1  # epoch 2 starts after the warm-up, at or below the peak


def test_bad_train_flags_are_one_line(tmp_path):
    r = train('--model', 'vgg16', '--epochs', '0', '--out', 'x.ckpt')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = train('--model', 'resnet50', '--batch-norm', '--out', 'x.ckpt')
    assert r.returncode == 2 and '--batch-norm is for --model vgg16' in r.stderr
    r = train('--resume', tmp_path / 'none.state')
    assert r.returncode == 1 and 'training state not found' in r.stderr and 'Traceback' not in r.stderr


def test_an_out_that_cannot_be_written_stops_train_at_once(tmp_path):
    # refused before the data are read, not when the finished run is saved, hours later
    shipped = os.path.join(ROOT, PRETRAINED['resnet50'])
    no_data = tmp_path / 'no-data-here'
    r = train('--model', 'resnet50', '--data', no_data, '--out', shipped)
    assert r.returncode == 1 and 'will not overwrite the shipped checkpoint' in r.stderr, r.stderr
    r = train('--model', 'resnet50', '--data', no_data, '--out', tmp_path)
    assert r.returncode == 1 and 'names a folder; give a file name in it' in r.stderr, r.stderr
    (tmp_path / 'a-file').write_text('kept')
    r = train('--model', 'resnet50', '--data', no_data, '--out', tmp_path / 'x.ckpt',
              '--state', tmp_path / 'a-file' / 'x.state')
    assert r.returncode == 1 and 'a-file is a file, not a folder; choose another --state' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr and (tmp_path / 'a-file').read_text() == 'kept'


def constant_teacher(path, class_index):
    """A ResNet50_layer4 checkpoint that says `class_index` for every image, whatever it shows."""
    torch.manual_seed(0)
    model = MODELS['resnet50']()
    fc = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    torch.nn.init.zeros_(fc.weight)
    with torch.no_grad():
        fc.bias.copy_(torch.full((10,), -5.0).index_fill_(0, torch.tensor(class_index), 5.0))
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_a_student_distilled_from_a_teacher_learns_what_the_teacher_says(image_folder, tmp_path):
    # the teacher calls everything a cat; with the labels' share at 0 the student must learn that, not the labels
    cat = CLASSES.index('cat')
    teacher = constant_teacher(tmp_path / 'teacher.ckpt', cat)
    out = tmp_path / 'student.ckpt'
    r = train('--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 3, '--batch-size', 50,
              '--teacher', teacher, '--distill-weight', 1, '--temperature', 2, '--device', 'cpu',
              '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(ResNet50_layer4), right on 10.00 % of the training images" in r.stdout  # 30 cats among 300
    assert 'loss: 0 x labels + 1 x teachers at temperature 2' in r.stdout
    model = MODELS['resnet50']().eval()
    load_checkpoint(model, out)
    images, labels = decode(image_folder, 'test')
    with torch.no_grad():
        said = model(normalize(images)).argmax(1)
    assert (said == cat).float().mean() >= 0.9, said.bincount(minlength=10)


@pytest.mark.slow
def test_a_distilled_run_resumes_bitwise_and_keeps_its_teachers(image_folder, tmp_path):
    # two teachers, whose predictions are averaged
    teacher = constant_teacher(tmp_path / 'teacher.ckpt', 3)
    other = constant_teacher(tmp_path / 'other.ckpt', 5)
    common = ['--model', 'resnet50', '--data', image_folder, '--holdout', 50, '--epochs', 2, '--batch-size', 64,
              '--teacher', teacher, other, '--device', 'cpu', '--no-rescale', '--full-precision']
    r = train(*common, '--out', tmp_path / 'straight.ckpt')
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'distilling from {teacher} (ResNet50_layer4) and {other} (ResNet50_layer4), right on' in r.stdout
    r = train(*common, '--out', tmp_path / 'pieces.ckpt', '--stop-after', 1)
    assert r.returncode == 0, r.stderr[-2000:]
    # the resumed run uses the predictions saved in its state, not whatever the file holds now
    constant_teacher(teacher, 7)
    r = train('--resume', tmp_path / 'pieces.ckpt.state')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'their predictions as saved in the state' in r.stdout
    a, b = torch.load(tmp_path / 'straight.ckpt'), torch.load(tmp_path / 'pieces.ckpt')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_distillation_flags_are_one_line(image_folder, tmp_path):
    common = ['--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 1, '--device', 'cpu',
              '--out', tmp_path / 'x.ckpt']
    r = train(*common, '--teacher', tmp_path / 'x.ckpt', '--distill-weight', 1.5)
    assert r.returncode == 2 and '--distill-weight must be between 0 and 1' in r.stderr
    r = train(*common, '--teacher', tmp_path / 'missing.ckpt')
    assert r.returncode == 1 and 'missing.ckpt' in r.stderr and 'give --teacher a checkpoint' in r.stderr, r.stderr
    torch.save({'weight': torch.zeros(3)}, tmp_path / 'other.ckpt')
    r = train(*common, '--teacher', tmp_path / 'other.ckpt')
    assert r.returncode == 1 and 'neither a VGG16 nor a ResNet50_layer4 checkpoint' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / 'x.ckpt').exists()


@pytest.mark.parametrize('flag, value, message', [
    ('--momentum', 'nan', '--momentum: must be 0 or a positive number, not nan'),
    ('--momentum', '1', '--momentum: must be at least 0 and below 1, not 1'),
    ('--weight-decay=-1e-4', None, '--weight-decay: must be 0 or a positive number, not -1e-4'),
    ('--label-smoothing', 'nan', '--label-smoothing: must be 0 or a positive number, not nan'),
    ('--swa-from', '0', '--swa-from: must be at least 1, not 0'),
    ('--sam', '-0.05', '--sam: must be a positive number, not -0.05'),
])
def test_training_settings_that_cannot_work_are_refused_in_one_line(tmp_path, flag, value, message):
    given = [flag] if value is None else [flag, value]
    one_line_error(train('--model', 'resnet50', '--out', tmp_path / 'x.ckpt', *given), re.escape(message), 2)


def test_swa_must_start_within_the_run(tmp_path):
    one_line_error(train('--model', 'resnet50', '--out', tmp_path / 'x.ckpt', '--epochs', 3, '--swa-from', 4),
                   r'--swa-from 4 is after the last epoch \(3\)', 2)
    one_line_error(train('--model', 'resnet50', '--out', tmp_path / 'x.ckpt', '--swa-lr', 0.01),
                   '--swa-lr goes with --swa-from', 2)


@pytest.mark.slow
def test_swa_saves_the_average_of_the_stated_epochs_with_batchnorm_recomputed(image_folder, tmp_path):
    # 3 epochs, averaged from epoch 2, run in two pieces: the average is part of the state
    out = tmp_path / 'swa.ckpt'
    common = ['--model', 'resnet50', '--data', image_folder, '--holdout', 50, '--epochs', 3, '--batch-size', 125,
              '--device', 'cpu', '--no-rescale', '--full-precision', '--swa-from', 2, '--out', out]
    r = train(*common, '--stop-after', 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'learning rate held at' in r.stdout and 'epoch 2/3: ' in r.stdout and '1 epochs averaged' in r.stdout
    after_two = torch.load(tmp_path / 'swa.ckpt.state')
    assert after_two['average']['n'] == 1
    r = train('--resume', tmp_path / 'swa.ckpt.state')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'using the average of the last 2 epochs' in r.stdout
    after_three = torch.load(tmp_path / 'swa.ckpt.state')
    saved = torch.load(out)
    model = MODELS['resnet50']()
    for name, _ in model.named_parameters():
        expected = (after_two['model'][name] + after_three['model'][name]) / 2
        assert torch.allclose(saved[name], expected, atol=1e-6), name
    # BatchNorm's statistics are the averaged weights' own, measured again on the training images
    assert not torch.allclose(saved['layer1.1.running_mean'], after_three['model']['layer1.1.running_mean'])
    log = json.loads((tmp_path / 'swa.ckpt.state.json').read_text())
    assert log[1]['lr'] == log[2]['lr'] > 0  # held from epoch 2 on


def test_sam_takes_the_gradient_at_the_weights_moved_uphill_and_puts_them_back():
    import train as train_module
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss_of = lambda: torch.nn.functional.cross_entropy(net(x), y)  # noqa: E731
    net.train()
    loss_of().backward()
    before = [p.detach().clone() for p in net.parameters()]
    grads = [p.grad.clone() for p in net.parameters()]
    stats = net[1].running_mean.clone()
    rho = 0.5
    train_module.sam_second_pass(net, loss_of, rho)
    # by hand: the gradient at w + rho g / |g|
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    probe = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    probe.load_state_dict(net.state_dict())
    with torch.no_grad():
        for q, w, g in zip(probe.parameters(), before, grads):
            q.copy_(w + rho * g / norm)
    torch.nn.functional.cross_entropy(probe.train()(x), y).backward()
    for p, q, w in zip(net.parameters(), probe.parameters(), before):
        assert torch.equal(p, w)  # moved back
        assert torch.allclose(p.grad, q.grad, atol=1e-6)  # the perturbed gradient, not the first one
    assert not all(torch.allclose(p.grad, g) for p, g in zip(net.parameters(), grads))
    assert torch.equal(net[1].running_mean, stats)  # the probe's pass left BatchNorm's statistics alone


@pytest.mark.slow
def test_a_sam_run_trains(image_folder, tmp_path):
    r = train('--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 1, '--batch-size', 150,
              '--sam', 0.05, '--device', 'cpu', '--out', tmp_path / 'sam.ckpt')
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'sam.ckpt').exists() and 'saved model: validation accuracy' in r.stdout


@pytest.mark.slow
def test_resume_keeps_the_runs_settings_and_refuses_states_it_cannot_continue(image_folder, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(image_folder, data)
    out, state = tmp_path / 'run.ckpt', tmp_path / 'run.ckpt.state'
    r = train('--model', 'resnet50', '--data', data, '--holdout', 50, '--epochs', 1, '--batch-size', 125,
              '--device', 'cpu', '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    # a setting of the run may not change; where it writes and the device may
    one_line_error(train('--resume', state, '--lr', 0.5), r"--lr 0.5 differs from the run's 0.1: --resume goes on")
    one_line_error(train('--resume', state, '--out', state), 'is the state being resumed; choose another --out')
    saved = torch.load(state, weights_only=True)
    saved['args']['device'] = 'cuda'  # as a state saved on a GPU
    torch.save(saved, tmp_path / 'gpu.state')
    r = train('--resume', tmp_path / 'gpu.state', '--device', 'cpu', '--out', tmp_path / 'again.ckpt')
    assert r.returncode == 0 and 'device cpu' in r.stdout and (tmp_path / 'again.ckpt').exists(), r.stderr
    # damaged states and other data are one line each, before any training
    for name, change in (('no-model', lambda s: s['args'].update(model='resnet18')),
                         ('no-scheduler', lambda s: s.pop('scheduler')),
                         ('other-weights', lambda s: s.update(model=MODELS['vgg16']().state_dict()))):
        broken = torch.load(state, weights_only=True)
        change(broken)
        torch.save(broken, tmp_path / f'{name}.state')
        one_line_error(train('--resume', tmp_path / f'{name}.state'), 'not a state (train.py|this run) can continue')
    shutil.copy(os.path.join(data, 'train', 'cat', '0000.png'), os.path.join(data, 'train', 'cat', 'extra.png'))
    one_line_error(train('--resume', state), r'is not what this run trained on \(250 training images then, 251 now')
    one_line_error(train('--model', 'resnet50', '--out', out, '--state', out),
                   '--out and --state are the same file', 2)


def test_world_size_without_torchrun_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.delenv('MASTER_ADDR', raising=False)
    one_line_error(train('--model', 'resnet50', '--data', tmp_path, '--out', tmp_path / 'x.ckpt'),
                   'WORLD_SIZE is 2, but this process was not started by torchrun')


@pytest.mark.slow
def test_a_mistake_under_torchrun_reaches_the_user_in_one_line(image_folder, tmp_path):
    r = run('-m torch.distributed.run', '--standalone', '--nproc_per_node', 2, os.path.join(ROOT, 'train.py'),
            '--model', 'resnet50', '--data', image_folder, '--holdout', 100000, '--device', 'cpu',
            '--out', tmp_path / 'x.ckpt', env={'OMP_NUM_THREADS': '1'}, timeout=300)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith('error: ')]
    # once (from rank 0), whatever torchrun itself then says about the failed processes
    assert lines == ['error: holding out 100000 images leaves none to train on (there are 300); give a smaller --holdout'], \
        r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet50', 'vgg16'])
def test_init_starts_from_a_trained_checkpoint_scaled_back_to_its_trained_size(name, image_folder, tmp_path):
    # a run with a learning rate too small to move anything saves the weights it started from
    torch.manual_seed(3)
    trained = MODELS[name]()
    torch.save(scale_for_adam(copy.deepcopy(trained)).state_dict(), tmp_path / 'shipped.ckpt')  # as shipped
    start = unscale(scale_for_adam(trained))  # what --init trains (test_weight_scaling checks unscale itself)
    out = tmp_path / 'more.ckpt'
    r = train('--model', name, '--data', image_folder, '--holdout', 50, '--epochs', 1, '--batch-size', 125,
              '--device', 'cpu', '--bf16', 'off', '--init', tmp_path / 'shipped.ckpt', '--swa-from', 1,
              '--swa-lr', 1e-30, '--no-rescale', '--full-precision', '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = torch.load(out)
    for key, p in start.named_parameters():
        assert torch.allclose(saved[key], p, rtol=1e-5, atol=1e-7), key


def test_an_init_that_cannot_be_trained_further_is_one_line(checkpoints, tmp_path):
    common = ['--out', tmp_path / 'x.ckpt', '--epochs', 1, '--device', 'cpu']
    one_line_error(train('--model', 'vgg16', '--init', checkpoints['resnet50'], *common),
                   r'is a ResNet50_layer4 checkpoint, not VGG16; give --init one of --model vgg16')
    one_line_error(train('--model', 'resnet50', '--init', tmp_path / 'missing.ckpt', *common),
                   'missing.ckpt.*give --init a checkpoint')
    one_line_error(train('--model', 'vgg16', '--batch-norm', '--init', checkpoints['vgg16'], *common),
                   '--init goes without --batch-norm', 2)
    assert not (tmp_path / 'x.ckpt').exists()


def test_the_teachers_predict_under_the_runs_bf16_autocast_and_as_in_float32():
    # the shipped teachers in float32 took 20 minutes of a one-core run; under the run's bf16 autocast
    # their predictions must come out bf16-computed, and still the same targets (VGG16's head near 2^60 too)
    import train as train_script
    from helpers.data import TensorLoader
    teachers = []
    for name in ('vgg16', 'resnet50'):
        model = MODELS[name]()
        load_checkpoint(model, os.path.join(ROOT, PRETRAINED[name]))
        teachers.append(model)
    dtypes = []
    teachers[1].layer1[0].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    loader = TensorLoader(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), torch.arange(6))
    names = ['vgg.ckpt', 'resnet.ckpt']
    float32 = train_script.teacher_predictions(copy.deepcopy(teachers), names, loader, torch.device('cpu'), 4.0,
                                               contextlib.nullcontext(), lambda *a: None)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    bf16 = train_script.teacher_predictions(teachers, names, loader, torch.device('cpu'), 4.0,
                                            torch.autocast('cpu', dtype=torch.bfloat16), lambda *a: None)
    assert set(dtypes) == {torch.bfloat16}
    assert bf16.dtype == torch.float32 and torch.allclose(bf16.sum(1), torch.ones(6))
    assert (bf16 - float32).abs().max() < 0.02, (bf16 - float32).abs().max()
