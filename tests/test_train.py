"""train.py: checkpoints main.py evaluates, resuming, held-out validation, bf16, torchrun."""
import json
import os
import shutil
import subprocess
import sys

import torch

from conftest import ROOT, run_main
from helpers.checkpoints import load_checkpoint
from helpers.data import CLASSES, TensorLoader, decode
from helpers.devices import cpu_has_native_bf16
from helpers.model_table import MODELS, PRETRAINED


def accuracy_of(line_prefix, text):
    line = next(line for line in text.splitlines() if line.startswith(line_prefix))
    return float(line.split('accuracy ')[1].split(' %')[0])


def test_vgg16_trained_with_batchnorm_learns_and_main_gets_the_same_accuracy(image_folder, tmp_path):
    # the synthetic classes differ in colour: a short run must beat chance (10 %) clearly
    out = tmp_path / 'trained.ckpt'
    r = run_main('--model', 'vgg16', '--batch-norm', '--data', image_folder, '--holdout', 0, '--epochs', 4,
                 '--batch-size', 20, '--lr', 0.05, '--device', 'cpu', '--out', out, script='train.py')
    assert r.returncode == 0, r.stderr
    assert 'VGG16 with BatchNorm, world size 1' in r.stdout and out.exists()
    saved = accuracy_of('saved model: validation accuracy', r.stdout)
    assert saved >= 35, r.stdout
    # what is saved is the assignment's BN-free VGG16, scaled: main.py tests it to the same number
    r = run_main('--model', 'vgg16', '--data', image_folder, '--checkpoint', out, '--eval-only', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f'Accuracy of the model on the test images: {saved} %'


def test_two_epochs_stop_resume_two_more_equal_four_straight(image_folder, tmp_path):
    # no test split at all: --holdout validates on training images kept out, so the test split is never read
    data = tmp_path / 'data'
    shutil.copytree(os.path.join(image_folder, 'train'), data / 'train')
    # on the CPU, where a run is repeatable to the last bit
    common = ['--model', 'resnet50', '--data', data, '--holdout', 50, '--epochs', 4, '--batch-size', 64,
              '--cutout', 8, '--device', 'cpu', '--no-rescale', '--full-precision']
    r = run_main(*common, '--out', tmp_path / 'straight.ckpt', script='train.py')
    assert r.returncode == 0, r.stderr
    assert '250 training images (Cutout 8x8), 50 validation images (held out of the training split)' in r.stdout
    r = run_main(*common, '--out', tmp_path / 'pieces.ckpt', '--stop-after', 2, script='train.py')
    assert r.returncode == 0, r.stderr
    assert 'stopped after epoch 2 of 4' in r.stdout and not (tmp_path / 'pieces.ckpt').exists()
    state = tmp_path / 'pieces.ckpt.state'
    assert [h['epoch'] for h in json.loads((tmp_path / 'pieces.ckpt.state.json').read_text())] == [1, 2]
    r = run_main('--resume', state, script='train.py')
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
    r = run_main('--resume', state, script='train.py')
    assert r.returncode == 0 and 'had finished its 4 epochs' in r.stdout and 'epoch 4/4' not in r.stdout, r.stderr
    b = torch.load(tmp_path / 'pieces.ckpt')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_log_says_whether_training_runs_in_bf16(image_folder, tmp_path):
    # --bf16 off is float32 everywhere; on a CPU without native bf16 the log says why auto is too
    auto, off = (('bf16 autocast (the CPU has AVX512-BF16 or AMX)', 'float32') if cpu_has_native_bf16() else
                 ('float32 (the CPU has no native bf16)',) * 2)
    for flag, says in (('auto', auto), ('off', off)):
        r = run_main('--model', 'resnet50', '--data', image_folder, '--epochs', 1, '--batch-size', 100,
                     '--holdout', 0, '--device', 'cpu', '--bf16', flag, '--out', tmp_path / f'{flag}.ckpt', script='train.py')
        assert r.returncode == 0, r.stderr
        assert f'device cpu, {says},' in r.stdout.splitlines()[0]


def test_train_under_torchrun_with_two_processes(image_folder, tmp_path):
    out = tmp_path / 'ddp.ckpt'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    # on the CPU explicitly: on a machine with one GPU, two processes cannot each have one
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        os.path.join(ROOT, 'train.py'), '--model', 'resnet50', '--data', image_folder,
                        '--epochs', '1', '--batch-size', '50', '--holdout', '0', '--device', 'cpu', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'world size 2' in r.stdout and out.exists()
    r = run_main('--data', image_folder, '--checkpoint', out, '--eval-only')
    assert r.returncode == 0, r.stderr


def test_a_run_of_four_steps_in_all_trains(image_folder, tmp_path):
    # 300 images, batch 150, 2 epochs: a one-step warm-up, where OneCycleLR itself divides by zero
    r = run_main('--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 2, '--batch-size', 150,
                 '--device', 'cpu', '--out', tmp_path / 'four.ckpt', script='train.py')
    assert r.returncode == 0, r.stderr[-2000:]
    lrs = [h['lr'] for h in json.loads((tmp_path / 'four.ckpt.state.json').read_text())]
    assert lrs[0] < lrs[1] <= 0.1  # epoch 2 starts after the warm-up, at or below the peak


def test_bad_train_flags_are_one_line(tmp_path):
    r = run_main('--model', 'vgg16', '--epochs', '0', '--out', 'x.ckpt', script='train.py')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run_main('--model', 'resnet50', '--batch-norm', '--out', 'x.ckpt', script='train.py')
    assert r.returncode == 2 and '--batch-norm is for --model vgg16' in r.stderr
    r = run_main('--resume', tmp_path / 'none.state', script='train.py')
    assert r.returncode == 1 and 'training state not found' in r.stderr and 'Traceback' not in r.stderr


def test_an_out_that_cannot_be_written_stops_train_at_once(tmp_path):
    # it used to fail (or refuse the shipped file) only when the finished run was saved, hours later
    shipped = os.path.join(ROOT, PRETRAINED['resnet50'])
    no_data = tmp_path / 'no-data-here'
    r = run_main('--model', 'resnet50', '--data', no_data, '--out', shipped, script='train.py')
    assert r.returncode == 1 and 'will not overwrite the shipped checkpoint' in r.stderr, r.stderr
    r = run_main('--model', 'resnet50', '--data', no_data, '--out', tmp_path, script='train.py')
    assert r.returncode == 1 and 'names a folder; give a file name in it' in r.stderr, r.stderr
    (tmp_path / 'a-file').write_text('kept')
    r = run_main('--model', 'resnet50', '--data', no_data, '--out', tmp_path / 'x.ckpt',
                 '--state', tmp_path / 'a-file' / 'x.state', script='train.py')
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


def test_a_student_distilled_from_a_teacher_learns_what_the_teacher_says(image_folder, tmp_path):
    # the teacher calls everything a cat; with the labels' share at 0 the student must learn that, not the labels
    cat = CLASSES.index('cat')
    teacher = constant_teacher(tmp_path / 'teacher.ckpt', cat)
    out = tmp_path / 'student.ckpt'
    r = run_main('--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 3, '--batch-size', 50,
                 '--teacher', teacher, '--distill-weight', 1, '--temperature', 2, '--device', 'cpu',
                 '--out', out, script='train.py')
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(ResNet50_layer4), right on 10.00 % of the training images" in r.stdout  # 30 cats among 300
    assert 'loss: 0 x labels + 1 x teachers at temperature 2' in r.stdout
    model = MODELS['resnet50']().eval()
    load_checkpoint(model, out)
    images, labels = decode(image_folder, 'test')
    with torch.no_grad():
        said = model(TensorLoader(images, labels).normalize(images)).argmax(1)
    assert (said == cat).float().mean() >= 0.9, said.bincount(minlength=10)


def test_a_distilled_run_resumes_bitwise_and_keeps_its_teachers(image_folder, tmp_path):
    # two teachers, whose predictions are averaged
    teacher = constant_teacher(tmp_path / 'teacher.ckpt', 3)
    other = constant_teacher(tmp_path / 'other.ckpt', 5)
    common = ['--model', 'resnet50', '--data', image_folder, '--holdout', 50, '--epochs', 2, '--batch-size', 64,
              '--teacher', teacher, other, '--device', 'cpu', '--no-rescale', '--full-precision']
    r = run_main(*common, '--out', tmp_path / 'straight.ckpt', script='train.py')
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'distilling from {teacher} (ResNet50_layer4) and {other} (ResNet50_layer4), right on' in r.stdout
    r = run_main(*common, '--out', tmp_path / 'pieces.ckpt', '--stop-after', 1, script='train.py')
    assert r.returncode == 0, r.stderr[-2000:]
    # the resumed run uses the predictions saved in its state, not whatever the file holds now
    constant_teacher(teacher, 7)
    r = run_main('--resume', tmp_path / 'pieces.ckpt.state', script='train.py')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'their predictions as saved in the state' in r.stdout
    a, b = torch.load(tmp_path / 'straight.ckpt'), torch.load(tmp_path / 'pieces.ckpt')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_distillation_flags_are_one_line(image_folder, tmp_path):
    common = ['--model', 'resnet50', '--data', image_folder, '--holdout', 0, '--epochs', 1, '--device', 'cpu',
              '--out', tmp_path / 'x.ckpt']
    r = run_main(*common, '--teacher', tmp_path / 'x.ckpt', '--distill-weight', 1.5, script='train.py')
    assert r.returncode == 2 and '--distill-weight must be between 0 and 1' in r.stderr
    r = run_main(*common, '--teacher', tmp_path / 'missing.ckpt', script='train.py')
    assert r.returncode == 1 and 'missing.ckpt' in r.stderr and 'give --teacher a checkpoint' in r.stderr, r.stderr
    torch.save({'weight': torch.zeros(3)}, tmp_path / 'other.ckpt')
    r = run_main(*common, '--teacher', tmp_path / 'other.ckpt', script='train.py')
    assert r.returncode == 1 and 'neither a VGG16 nor a ResNet50_layer4 checkpoint' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / 'x.ckpt').exists()
