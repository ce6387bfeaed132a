"""main.py as students run and edit it: each test is a case a student or TA meets."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_image_folder
from helpers.checkpoints import PRETRAINED
from helpers.devices import pick_device
from scripts import ACCURACY, ROOT, main, one_line_error, run


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('tiny'), train_per_class=3, test_per_class=2)


def edited(tmp_path, *changes):
    """A copy of main.py with each (old, new) line change made, as a student edits it."""
    with open(os.path.join(ROOT, 'main.py'), encoding='utf-8') as f:
        text = f.read()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / 'main.py'
    path.write_text(text, encoding='utf-8')
    return str(path)


MODEL = 'model = ResNet50_layer4()\n'
PATH_LINE = "PATH = './checkpoints/resnet50_cifar10.ckpt'"


def test_the_default_run_fine_tunes_saves_and_prints_the_accuracy_line(tiny, tmp_path):
    r = main('--data', tiny, '--seed', '0', '--out', tmp_path / 'new' / 'r.ckpt', '--batch-size', '10')
    assert r.returncode == 0, r.stderr
    assert ACCURACY.search(r.stdout) and r.stdout.strip().splitlines()[-1].startswith('Accuracy of the model')
    # the device auto picks here: the CPU in CI, cuda:0 on a GPU machine
    assert r.stdout.startswith(f'resnet50 from ./checkpoints/resnet50_cifar10.ckpt on {pick_device()}')
    assert r.stdout.splitlines()[0].endswith(f'30 training and 20 test images from {tiny}')
    state = torch.load(tmp_path / 'new' / 'r.ckpt', weights_only=True)
    assert all(v.is_contiguous() and v.device.type == 'cpu' for v in state.values())
    assert not [n for n in os.listdir(tmp_path / 'new') if n != 'r.ckpt']  # no temporary file left


@pytest.mark.parametrize('edit, says', [
    (('num_epochs = 1 ', 'num_epochs = 0 '), r'num_epochs = 0 at the top of main\.py: must be at least 1'),
    (('batch_size = 100', "batch_size = 'lots'"), r"batch_size = 'lots' at the top .*'lots' is not a whole number"),
    (("bf16 = 'auto'", 'bf16 = True'), r"bf16 = True .*use 'auto' or 'off'"),
    (('eval_only = False', "eval_only = 'yes'"), r"eval_only = 'yes' .*use True or False"),
    (('report = None', 'report = True'), r"report = True .*use a folder name in quotes, e.g. report = 'reports/run1'"),
    (("data_dir = './data'", 'data_dir = None'), r"data_dir = None .*give a value, e.g. data_dir = './data'"),
    (("device = 'auto'", "device = 'gpu'"), r"device = 'gpu' .*not a device PyTorch knows"),
    ((MODEL, 'model = vgg16\n'), r'model = vgg16 in main\.py is a function, not a network: call it'),
    ((MODEL, 'model = ResNet50_layer4\n'), r'model = ResNet50_layer4 in main\.py is a class'),
    ((MODEL, 'model = ResNet50_layer4().half()\n'), r'the model is torch\.float16 .*leave it float32'),
    ((PATH_LINE, 'PATH = 1'), r'PATH = 1 in main\.py: give the checkpoint\'s path in quotes'),
    ((PATH_LINE, "PATH = '.\\checkpoints\\resnet50_cifar10.ckpt'"),
     r"not found: '.*\\r.*a backslash in a Python string starts an escape"),
    ((MODEL, 'model = vgg16()\n'), r'is a ResNet50_layer4 checkpoint, and the model is VGG16: point PATH .*vgg16_'),
    (('out = None ', "out = 'checkpoints/x.ckpt' "), r"^error: out in main\.py checkpoints/x\.ckpt: .*holds only the "
                                                    r"shipped checkpoints .*; choose another, e\.g\. out = 'outputs/model\.ckpt'$"),
])
def test_an_edited_setting_is_checked_like_its_flag_in_one_line(tmp_path, tiny, edit, says):
    one_line_error(main('--data', tiny, script=edited(tmp_path, edit)), says)


def test_a_path_with_a_space_at_its_end_is_shown_quoted(tmp_path, tiny):
    r = main('--data', tiny if os.name != 'nt' else tmp_path / 'none', script=edited(tmp_path, (PATH_LINE, PATH_LINE[:-1] + " '")))
    if os.name == 'nt':  # Windows drops a path's trailing spaces: there the checkpoint is found, the data is not
        one_line_error(r, 'data folder not found')
    else:
        one_line_error(r, r"not found: './checkpoints/resnet50_cifar10\.ckpt '")


def test_a_network_of_the_students_own(tmp_path, tiny):
    own = 'class Net(nn.Module):\n    def __init__(self, n=10):\n        super().__init__()\n' \
          '        self.fc = nn.Linear(3072, n)\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n'
    shipped = edited(tmp_path, (MODEL, own + 'model = Net()\n'))
    one_line_error(main('--data', tiny, script=shipped), r'is a ResNet50_layer4 checkpoint, and the model is Net: set PATH')
    five = edited(tmp_path, (MODEL, own + 'model = Net(5)\n'), (PATH_LINE, 'PATH = None'))
    one_line_error(main('--data', tiny, script=five), r'Net gives outputs of shape \(2, 5\).*needs \(2, 10\)')
    fresh = edited(tmp_path, (MODEL, own + 'model = Net()\n'), (PATH_LINE, "PATH = 'mine.ckpt'"))
    r = main('--data', tiny, '--eval-only', script=fresh)
    assert r.returncode == 0 and 'no checkpoint at mine.ckpt, so Net starts from random weights' in r.stdout


def test_dash_dash_model_takes_that_network_with_its_own_checkpoint_whatever_the_edits(tmp_path, tiny):
    script = edited(tmp_path, (MODEL, 'model = vgg16()\n'))
    r = main('--model', 'resnet50', '--data', tiny, '--eval-only', script=script)
    assert r.returncode == 0 and r.stdout.startswith(f'resnet50 from {PRETRAINED["resnet50"]}'), r.stderr


@pytest.mark.parametrize('args, says', [
    (['--out', 'outputs'], r"--out outputs: give a file name ending in \.ckpt"),
    (['--out', ''], r"argument --out: '' is empty"),
    (['--out', 'checkpoints/mine.ckpt'], r'holds only the shipped checkpoints'),
    (['--out', 'outputs/../checkpoints/./mine.ckpt'], r'holds only the shipped checkpoints'),
    (['--checkpoint', 'DIR/r.ckpt'], r'the default --out outputs.resnet50_final\.ckpt is the file this run starts'),
    (['--out', 'DIR/notes.pt'], r'notes\.pt is a file of another kind'),
    (['--out', 'DIR/file.ckpt/x.ckpt'], r'file\.ckpt is a file, not a folder'),
    (['--eval-only', '--lr', '0.1'], r'--lr does nothing with --eval-only'),
    (['--batch-size', '1'], r'--batch-size 1 cannot fine-tune a network with BatchNorm'),
    (['--model', 'vgg16', '--batch-size', '100000'], r'--batch-size 100000 is too large for this checkpoint'),
    (['--plain', '--batch-size', '29'], r'the last training batch would hold one image \(30 images, batch 29\)'),
    (['--data', 'DIR/nowhere'], r'data folder not found: .*nowhere'),
    (['--checkpoint', 'DIR/r_epoch20.ckpt', '--out', 'DIR/r.ckpt', '--epochs', '20'], r'r_epoch20\.ckpt is the file'),
])
def test_a_mistake_on_the_command_line_is_one_line_before_any_work(tmp_path, tiny, args, says):
    (tmp_path / 'file.ckpt').write_bytes(b'')
    (tmp_path / 'notes.pt').write_text('my notes')
    os.makedirs(tmp_path / 'outputs', exist_ok=True)
    torch.save({}, tmp_path / 'r.ckpt')
    torch.save({}, tmp_path / 'r_epoch20.ckpt')  # num_epochs = 20 saves beside --out: r_epoch20.ckpt
    args = [str(a).replace('DIR', str(tmp_path)) for a in args]
    if '--checkpoint' in args and '--out' not in args:  # the checkpoint being fine-tuned is the default --out: never replaced
        args[args.index('--checkpoint') + 1] = os.path.join('outputs', 'resnet50_final.ckpt')
        torch.save(torch.load(os.path.join(ROOT, PRETRAINED['resnet50'])), tmp_path / 'outputs' / 'resnet50_final.ckpt')
    code = 2 if "''" in says else 1
    data = [] if '--data' in args else ['--data', tiny]
    one_line_error(main(*data, *args, cwd=tmp_path if '--checkpoint' in args else ROOT), says, code)


def test_an_output_that_is_a_device_or_a_pipe_is_never_replaced(tmp_path):
    fifo = tmp_path / 'x.ckpt'
    if not hasattr(os, 'mkfifo'):
        pytest.skip('this platform makes no named pipes (Windows): nothing here is a device file')
    os.mkfifo(fifo)
    one_line_error(main('--out', fifo), r'x\.ckpt is not a regular file')


def test_relative_paths_run_from_another_folder_say_where_to_cd(tmp_path, tiny):
    one_line_error(main('--data', tiny, cwd=tmp_path), r'checkpoint not found: .*cd .* first')
    one_line_error(main('--checkpoint', os.path.join(ROOT, PRETRAINED['resnet50']), cwd=tmp_path),
                   r'data folder not found: \./data .*cd .* first')


def test_backslash_paths_on_linux_and_macos_are_told_to_use_slashes(tmp_path, tiny):
    if os.sep == '\\':
        pytest.skip('on Windows a backslash separates folders')
    one_line_error(main('--data', tiny, '--checkpoint', 'checkpoints\\resnet50_cifar10.ckpt'), r'separated by /, not \\')


@pytest.mark.slow
@pytest.mark.parametrize('edit, says', [
    ((MODEL, 'model = ResNet50_layer4().cuda()\n'), r'main\.py line \d+, `model = ResNet50_layer4\(\)\.cuda\(\)`: .*; fix'),
    ((PATH_LINE, '# ' + PATH_LINE), r"main\.py line \d+, `run = setup\.prepare\(.*NameError: name 'PATH' is not defined"),
    ((MODEL, '# ' + MODEL), r"main\.py line \d+, `run = setup\.prepare\(.*NameError: name 'model' is not defined")])
def test_a_mistake_in_an_edited_line_names_that_line_instead_of_a_traceback(tmp_path, tiny, edit, says):
    if torch.cuda.is_available() and 'cuda' in edit[1]:
        pytest.skip('this machine has CUDA, so .cuda() works')
    one_line_error(run(edited(tmp_path, edit), '--data', tiny, env={'PYTHONPATH': ROOT}), says)


@pytest.mark.slow
@pytest.mark.parametrize('stdout', ['closed', 'pipe closed early', 'full disk'])
def test_the_outcome_does_not_depend_on_stdout_being_writable(tiny, tmp_path, stdout):
    if stdout == 'full disk' and not os.path.exists('/dev/full'):
        pytest.skip('no /dev/full here')
    command = [sys.executable, os.path.join(ROOT, 'main.py'), '--data', tiny, '--out', str(tmp_path / 'x.ckpt'),
               '--batch-size', '10']
    kwargs = {'closed': dict(stdout=None, pass_fds=(), close_fds=True),
              'full disk': dict(stdout=open('/dev/full', 'w') if stdout == 'full disk' else None)}.get(stdout, {})
    if stdout == 'closed':
        command = ['sh', '-c', '"$@" >&-', 'sh'] + command
    if stdout == 'pipe closed early':
        p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        p.stdout.readline()
        p.stdout.close()
        err, code = p.stderr.read().decode(), p.wait(timeout=300)
    else:
        r = subprocess.run(command, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300, **kwargs)
        err, code = r.stderr, r.returncode
    assert code == 0 and 'Traceback' not in err and 'Error' not in err, err
    assert os.path.isfile(tmp_path / 'x.ckpt')


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_half_written_file(tiny, tmp_path):
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), '--data', tiny, '--out',
                          str(tmp_path / 'x.ckpt')], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    time.sleep(8)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode in (0, 130), err
    if p.returncode == 130:
        assert err.decode().strip().splitlines()[-1].startswith('interrupted; ') and b'Traceback' not in err
    assert [n for n in os.listdir(tmp_path) if n.endswith('.tmp')] == []


@pytest.mark.slow
def test_a_diverging_fine_tune_stops_and_saves_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr('helpers.setup.DIVERGED', -1.0)  # any loss counts as diverged: the stop itself is tested
    one_line_error(main('--data', tiny, '--out', tmp_path / 'x.ckpt', '--batch-size', '10'),
                   r'the fine-tune diverged .*the model was not saved')
    assert not os.path.exists(tmp_path / 'x.ckpt')


@pytest.mark.slow
def test_plain_pipeline_and_eval_only_and_report(tiny, tmp_path):
    r = main('--data', tiny, '--plain', '--seed', '1', '--out', tmp_path / 'p.ckpt', '--batch-size', '10',
             '--report', tmp_path / 'report')
    assert r.returncode == 0 and '(plain pipeline)' in r.stdout, r.stderr
    assert os.path.isfile(tmp_path / 'report' / 'report.md')
    e = main('--data', tiny, '--eval-only', '--checkpoint', tmp_path / 'p.ckpt')
    assert e.returncode == 0 and 'Saved' not in e.stdout and ACCURACY.search(e.stdout)


@pytest.mark.slow
def test_the_assignments_learning_rate_decay_saves_the_model_every_20_epochs(tiny, tmp_path):
    r = main('--data', tiny, '--epochs', 20, '--batch-size', 15, '--out', tmp_path / 'long.pt', '--seed', 0)
    assert r.returncode == 0 and sorted(os.listdir(tmp_path)) == ['long.pt', 'long_epoch20.ckpt'], r.stderr


@pytest.mark.parametrize('edit', [
    None, ('0.2010))])\n\ntransform_test', '0.2010)),\n    transforms.RandomErasing()])\n\ntransform_test'), ('RandomCrop(32, padding=4)', 'RandomCrop(32, padding=2)'),
    ('RandomHorizontalFlip', 'RandomVerticalFlip'), ('import torchvision.transforms as transforms',
                                                       'import torchvision.transforms.v2 as transforms')])
def test_an_edited_transform_runs_as_written_and_says_so_the_handouts_runs_as_tensors(tiny, tmp_path, edit):
    script = edited(tmp_path, edit) if edit else os.path.join(ROOT, 'main.py')
    r = main('--data', tiny, '--seed', '0', '--batch-size', '10', '--out', tmp_path / 'x.ckpt', script=script)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if line.startswith('note: ')]
    if edit is None:  # the handout's loaders: the tensor loaders, whose batches for a seed are fixed
        assert notes == [] and not os.path.exists(tmp_path.parent / 'tensor.ckpt')
        os.replace(tmp_path / 'x.ckpt', tmp_path.parent / 'tensor.ckpt')
        return
    assert notes[0] == "note: transform_train differs from the assignment's: using it as written, per image (slower)"
    assert len(notes) == (2 if 'v2' in edit[1] else 1)  # v2's test transform is another type too
    ours, before = torch.load(tmp_path / 'x.ckpt'), torch.load(tmp_path.parent / 'tensor.ckpt')
    assert not all(torch.equal(ours[k], before[k]) for k in ours)  # the student's transform changed the run


def test_the_network_trained_is_the_network_named_whatever_the_line_order(tiny, tmp_path):
    vgg = f"model = vgg16()\nPATH = {os.path.join(ROOT, PRETRAINED['vgg16'])!r}\n"
    below = edited(tmp_path, ('settings.apply(globals())', 'settings.apply(globals())\n' + vgg))
    r = main('--data', tiny, '--batch-size', '10', '--report', tmp_path / 'rep', script=below, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith('vgg16 from '), r.stderr
    assert os.listdir(tmp_path / 'outputs') == ['vgg16_final.ckpt'] and '| model | vgg16 |' in open(
        tmp_path / 'rep' / 'report.md', encoding='utf-8').read()
    moved = edited(tmp_path, (MODEL + PATH_LINE, ''), ('settings.apply(globals())', 'settings.apply(globals())\n' + vgg))
    assert main('--data', tiny, '--eval-only', script=moved).stdout.startswith('vgg16 from ')
    one_line_error(main('--data', tiny, '--model', 'resnet50', script=moved),  # a flag the lines below would undo
                   r'main\.py sets model or PATH again below settings\.apply\(globals\(\)\), which --model')
    gone = edited(tmp_path, ('\nsettings.apply(globals())', '\n# settings.apply(globals())'),
                  ("data_dir = './data'", f'data_dir = {tiny!r}'))  # without the line, flags are not read
    one_line_error(main(script=gone), r"main\.py's line settings\.apply\(globals\(\)\) is missing")
