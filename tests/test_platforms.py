"""Where students run it: Windows, macOS and the Apple GPU, Colab's and Kaggle's GPUs, notebooks.

None of these machines is here, so each is emulated as honestly as Linux allows
(docs/platforms.md says which): Windows CPython by removing the names it lacks
from `os` and `signal` and setting sys.platform; Windows path rules with
`ntpath`; macOS and Windows with the spawn start method; GPUs and the Apple GPU
by mocking torch.cuda and torch.backends.mps; a notebook by running main.py's
code as a cell does (no __file__, the kernel's own sys.argv).
"""
import ast
import contextlib
import io
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import types

import pytest
import torch

from conftest import make_image_folder
from helpers import devices, errors, fast_path, progress
from helpers.model_table import MODELS
from scripts import ACCURACY, ROOT, main, one_line_error, train

# what CPython 3.10-3.12 on Windows does not have (os.fchmod came to Windows in 3.13)
WINDOWS_LACKS = {
    os: ['fchmod', 'fchown', 'chown', 'lchown', 'fork', 'forkpty', 'getuid', 'geteuid', 'getgid', 'getegid',
         'getpgid', 'setsid', 'killpg', 'sched_getaffinity', 'sched_setaffinity', 'getloadavg', 'sync', 'mkfifo',
         'nice', 'wait3', 'wait4', 'uname', 'statvfs', 'fstatvfs', 'chroot', 'getpriority', 'setpriority',
         'openpty', 'posix_fadvise', 'pipe2'],
    signal: ['SIGKILL', 'SIGHUP', 'SIGQUIT', 'SIGALRM', 'SIGUSR1', 'SIGUSR2', 'SIGCHLD', 'SIGPIPE', 'alarm',
             'pause', 'setitimer', 'getitimer', 'siginterrupt', 'pthread_kill', 'pthread_sigmask', 'sigwait'],
}


@pytest.fixture
def tiny(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('tiny'), train_per_class=3, test_per_class=2)


@contextlib.contextmanager
def as_on(monkeypatch, platform, start_method):
    """This process as on `platform` ('win32': without what Windows CPython lacks), with `start_method`
    as multiprocessing's default."""
    if platform == 'win32':
        # torch imports its compiler lazily, and that asks getpass for the user, which Linux's stdlib
        # answers with os.getuid (Windows' from the environment): imported first, as on a real Windows
        import torch._dynamo  # noqa: F401
        for module, names in WINDOWS_LACKS.items():
            for name in names:
                monkeypatch.delattr(module, name, raising=False)
    monkeypatch.setattr(sys, 'platform', platform)
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(start_method, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.endswith('.tmp') or f.startswith('.')]


@pytest.mark.slow
@pytest.mark.parametrize('platform', ['win32', 'darwin'])
def test_main_fine_tunes_saves_and_tests_as_on_windows_and_macos(monkeypatch, tiny, checkpoints, tmp_path, platform):
    from helpers import data
    monkeypatch.setattr(data, 'PARALLEL_DECODE_FROM', 1)  # worker processes would decode here if allowed
    out = tmp_path / 'results' / 'fine.ckpt'
    with as_on(monkeypatch, platform, 'spawn'):
        r = main('--data', tiny, '--checkpoint', checkpoints['resnet50'], '--batch-size', 10, '--out', out,
                 '--seed', 0)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ACCURACY.search(r.stdout) and out.is_file()
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_train_finishes_an_epoch_as_on_windows(monkeypatch, tiny, tmp_path):
    out = tmp_path / 'trained.ckpt'
    with as_on(monkeypatch, 'win32', 'spawn'):
        r = train('--model', 'resnet50', '--data', tiny, '--epochs', 1, '--batch-size', 10, '--holdout', 0,
                  '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_file() and (tmp_path / 'trained.ckpt.state').is_file()
    assert leftovers(tmp_path) == []


def package_files():
    files = ['main.py', 'train.py'] + [os.path.join(d, f) for d in ('helpers', 'tools')
                                       for f in sorted(os.listdir(os.path.join(ROOT, d))) if f.endswith('.py')]
    return [os.path.join(ROOT, f) for f in files]


def test_posix_only_calls_are_each_behind_a_platform_check():
    # a name Windows lacks may be used only in a function that checks sys.platform (or hasattr) first
    lacking = {(module.__name__, name) for module, names in WINDOWS_LACKS.items() for name in names}
    lacking |= {('multiprocessing', 'fork')}  # get_context('fork')
    found = []
    for path in package_files():
        tree = ast.parse(open(path, encoding='utf-8').read())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        top_level = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for where, body in [(f, ast.unparse(f)) for f in functions] + [(n, '') for n in top_level]:
            for node in ast.walk(where):
                used = None
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    used = (node.value.id, node.attr)
                elif isinstance(node, ast.Constant) and node.value == 'fork':
                    used = ('multiprocessing', 'fork')
                if used in lacking and 'sys.platform' not in body and 'hasattr(' not in body:
                    found.append(f'{os.path.relpath(path, ROOT)}:{node.lineno} {".".join(used)}')
    assert not found, found


@pytest.mark.parametrize('capability, native', [((6, 0), False), ((7, 0), False), ((7, 5), False),
                                                ((8, 0), True), ((8, 6), True), ((9, 0), True)])
def test_gpus_get_bf16_only_from_compute_capability_8(monkeypatch, capability, native):
    # P100 6.0, V100 7.0, T4 7.5 (Colab, Kaggle): is_bf16_supported() is true there by emulation
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
    gpu = torch.device('cuda', 0)
    chosen = devices.autocast(gpu)
    assert isinstance(chosen, torch.autocast) == native
    said = devices.precision(chosen, gpu)
    version = f'{capability[0]}.{capability[1]}'
    assert said == (f'bf16 autocast (the GPU has native bf16: compute capability {version})' if native else
                    f'float32 (the GPU has no native bf16: compute capability {version}, below 8.0)')
    assert 'float16' not in said


def test_main_and_train_take_their_precision_from_the_one_rule():
    for script in ('main.py', 'train.py'):
        text = open(os.path.join(ROOT, script), encoding='utf-8').read()
        assert 'devices.autocast(device' in text and 'is_bf16_supported' not in text


def pretend_mps(monkeypatch, available=True):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: available)


def test_auto_picks_cuda_then_the_apple_gpu_then_the_cpu(monkeypatch):
    pretend_mps(monkeypatch, available=False)
    assert devices.pick_device('auto') == torch.device('cpu')
    pretend_mps(monkeypatch)
    monkeypatch.setattr(devices, 'step_agrees', lambda device: True)
    assert devices.pick_device('auto') == torch.device('mps')
    assert devices.pick_device('mps') == torch.device('mps')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert devices.pick_device('auto') == torch.device('cuda', 0)


def test_mps_where_there_is_none_is_one_line():
    if devices.mps_available():
        pytest.skip('this machine has an Apple GPU')
    one_line_error(main('--device', 'mps', '--eval-only'), r'--device mps, but PyTorch sees no Apple GPU \(MPS\) '
                                                           r'here; use --device cpu \(or auto\)')


def test_the_agreement_check_passes_a_right_step_and_catches_a_wrong_one(monkeypatch, capsys):
    # the check itself, with the CPU standing in for the Apple GPU
    assert devices.step_agrees(torch.device('cpu'))
    right = devices._gradients

    def wrong(net, x, y, device, calls=[]):  # the second call is the "device": one gradient a little off
        calls.append(device)
        grads = right(net, x, y, device)
        if len(calls) == 2:
            grads[3] = grads[3] * 1.05
        return grads
    monkeypatch.setattr(devices, '_gradients', wrong)
    pretend_mps(monkeypatch)
    assert devices.pick_device('auto') == torch.device('cpu')
    assert 'disagrees with the same step on the CPU' in capsys.readouterr().err
    # and the check leaves the run's random numbers alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    devices.step_agrees(torch.device('cpu'))
    assert torch.equal(torch.rand(3), expected)


def test_on_the_apple_gpu_float32_nchw_and_no_cpu_kernels():
    mps = torch.device('mps')
    assert not isinstance(devices.autocast(mps), torch.autocast)
    assert devices.precision(devices.autocast(mps), mps) == 'float32 (the Apple GPU)'
    assert not fast_path.channels_last(MODELS['resnet50'](), mps)
    assert fast_path.channels_last(MODELS['resnet50'](), torch.device('cpu'))
    assert fast_path.adam_options(mps) == {}


def notebook_cell(tiny, checkpoint, out):
    """main.py's code as pasted into a notebook cell, its settings edited the way a student would."""
    text = open(os.path.join(ROOT, 'main.py'), encoding='utf-8').read()
    for old, new in ((r"PATH = './checkpoints/resnet50_cifar10.ckpt'", f'PATH = {checkpoint!r}'),
                     (r"data_dir = './data'", f'data_dir = {tiny!r}'), ('out = None', f'out = {str(out)!r}'),
                     ('batch_size = 100', 'batch_size = 10'), ('seed = None', 'seed = 0')):
        assert old in text
        text = text.replace(old, new, 1)
    return compile(text, '<ipython-input-1>', 'exec')


@pytest.mark.slow
def test_main_runs_in_a_notebook_cell_with_the_kernels_arguments(monkeypatch, tiny, checkpoints, tmp_path):
    # a Jupyter/Colab kernel's sys.argv: argparse took '-f' for a flag of main.py's
    monkeypatch.setattr(sys, 'argv', ['/usr/lib/python3/dist-packages/ipykernel_launcher.py', '-f',
                                      '/root/.local/share/jupyter/runtime/kernel-1.json'])
    monkeypatch.chdir(ROOT)
    out = tmp_path / 'cell.ckpt'
    stdout = io.StringIO()
    hook = sys.excepthook
    try:
        with contextlib.redirect_stdout(stdout):
            exec(notebook_cell(tiny, checkpoints['resnet50'], out), {'__name__': '__main__'})
    finally:
        sys.excepthook = hook
    assert ACCURACY.search(stdout.getvalue()) and out.is_file()


def test_mistakes_in_a_notebook_are_one_line_and_the_kernel_lives_on(monkeypatch, capsys):
    # IPython shows a cell's (and %run's) exceptions with shell.showtraceback, never sys.excepthook
    shown = []
    shell = types.SimpleNamespace(kernel=object(), showtraceback=lambda exc_tuple=None, **kw: shown.append(exc_tuple))
    monkeypatch.setitem(sys.modules, 'IPython', types.SimpleNamespace(get_ipython=lambda: shell))
    hook = sys.excepthook
    try:
        errors.install()
        errors.install()  # main.py run twice in one kernel: wrapped once
    finally:
        sys.excepthook = hook
    mistake = errors.UsageError('--lr must be positive')
    shell.showtraceback((type(mistake), mistake, None))  # no exit: we are still here
    assert capsys.readouterr().err == 'error: --lr must be positive\n' and shown == []
    other = ValueError('a bug')
    shell.showtraceback((ValueError, other, None))  # anything else keeps IPython's own traceback
    assert shown == [(ValueError, other, None)]
    assert progress.in_notebook_kernel()
    assert isinstance(progress.progress(range(3), 'epoch 1'), progress.notebook_tqdm)


@pytest.mark.slow
def test_ipythons_run_shows_a_mistake_in_one_line(tmp_path, capsys):
    pytest.importorskip('IPython')  # not a requirement; checked where it is installed
    from IPython.testing.globalipapp import start_ipython
    shell = start_ipython()
    script = tmp_path / 'cell.py'
    script.write_text('from helpers import errors\nerrors.install()\n'
                      "raise errors.CheckpointError('x.ckpt is a VGG16 checkpoint; use --model vgg16')\n")
    sys.path.insert(0, ROOT)
    shell.run_line_magic('run', str(script))
    err = capsys.readouterr().err
    assert 'error: x.ckpt is a VGG16 checkpoint; use --model vgg16' in err and 'Traceback' not in err


def test_a_kernels_own_arguments_are_never_read_as_flags(monkeypatch):
    from helpers.flags import _command_line
    monkeypatch.setattr(sys, 'argv', ['/usr/lib/python3/dist-packages/ipykernel_launcher.py', '--f=/x/kernel-v2-1.json'])
    assert _command_line({'__file__': 'main.py'}, None) == []  # an IDE's interactive window sets __file__
    assert _command_line({}, None) == []  # a pasted cell
    monkeypatch.setattr(sys, 'argv', ['main.py', '--model', 'vgg16'])  # %run main.py --model vgg16, or a shell
    assert _command_line({'__file__': 'main.py'}, None) == ['--model', 'vgg16']


@pytest.mark.slow
def test_progress_shows_a_line_every_tenth_where_output_is_no_terminal(tiny, checkpoints, tmp_path):
    r = main('--data', tiny, '--checkpoint', checkpoints['resnet50'], '--batch-size', 3, '--out',
             tmp_path / 'm.ckpt', '--seed', 0)
    assert r.returncode == 0, r.stderr
    tenths = re.findall(r'^epoch 1: (\d+)/10 steps \((\d+) %\)$', r.stdout, re.M)
    assert [int(step) for step, _ in tenths] == list(range(1, 10))


def test_output_in_a_console_encoding_without_the_character_does_not_crash(monkeypatch):
    # Windows with output redirected writes in the locale's code page (cp949 on a Korean Windows)
    console = io.TextIOWrapper(io.BytesIO(), encoding='cp949')
    monkeypatch.setattr(sys, 'stdout', console)
    monkeypatch.setattr(sys, 'stderr', console)
    hook = sys.excepthook
    try:
        errors.install()
    finally:
        sys.excepthook = hook
    print('resnet50 from C:\\Users\\José\\résumé.ckpt 한')
    console.flush()
    assert console.buffer.getvalue().decode('cp949') == 'resnet50 from C:\\Users\\Jos\\xe9\\r\\xe9sum\\xe9.ckpt 한\n'


def test_git_keeps_checkpoints_binary_and_sha256sums_in_lf():
    r = subprocess.run(['git', 'check-attr', 'binary', 'eol', '--', 'checkpoints/vgg16_cifar10.ckpt',
                        'checkpoints/resnet50_cifar10.ckpt', 'checkpoints/SHA256SUMS'],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    assert 'checkpoints/vgg16_cifar10.ckpt: binary: set' in r.stdout
    assert 'checkpoints/resnet50_cifar10.ckpt: binary: set' in r.stdout
    assert 'checkpoints/SHA256SUMS: eol: lf' in r.stdout


def test_requirements_admit_no_torch_older_than_the_apis_the_code_calls():
    text = open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8').read()
    least = re.search(r'^torch>=(\d+)\.(\d+)', text, re.M)
    # torch.cpu._is_avx512_bf16_supported and _is_amx_tile_supported came in 2.5 (measured: 2.4.1 lacks them)
    assert least and (int(least.group(1)), int(least.group(2))) >= (2, 5), text


def test_an_output_on_a_drive_with_nothing_mounted_is_one_line_not_a_hang(monkeypatch):
    # Windows: dirname('E:\\') is 'E:\\', so a walk up to an existing folder never ended there
    import threading

    from helpers import guards
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, 'exists', lambda p: False if str(p).startswith('/nowhere') or p == '/' else
                        real_exists(p))
    outcome = []

    def check():
        try:
            guards.check_output('/nowhere/results/m.ckpt', '--out')
        except errors.UsageError as e:
            outcome.append(str(e))
    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert outcome and re.search(r'--out /nowhere/results/m.ckpt: / is not there', outcome[0]), outcome
