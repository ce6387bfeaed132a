"""Where students run it: CUDA GPUs, the Apple GPU, notebooks, Windows. GPUs and IPython are mocked; Windows
is a real CPython stage in CI, where each test here asserts what Windows does."""
import io
import os
import re
import signal
import sys
import types
import warnings

import pytest
import torch

from helpers import devices, errors, fast_path, paths, progress
from helpers.checkpoints import MODELS
from helpers.errors import Mistake
from scripts import ROOT, main, one_line_error


def pretend(monkeypatch, cuda=False, mps=False, agrees=True):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: int(cuda))
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: mps)
    monkeypatch.setattr(devices, 'step_agrees', lambda device: agrees)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', torch.backends.cudnn.benchmark)  # which CUDA sets


def test_auto_picks_cuda_then_the_apple_gpu_where_it_computes_right_then_the_cpu(monkeypatch, capsys):
    pretend(monkeypatch, cuda=True, mps=True)
    assert devices.pick_device('auto') == torch.device('cuda', 0)
    pretend(monkeypatch, mps=True)
    assert devices.pick_device('auto') == devices.pick_device('mps') == torch.device('mps')
    pretend(monkeypatch)
    assert devices.pick_device('auto') == torch.device('cpu')
    # the Apple GPU only where one training step there gives the CPU's gradients
    pretend(monkeypatch, mps=True, agrees=False)
    assert devices.pick_device('auto') == torch.device('cpu')
    assert 'disagrees with the same step on the CPU' in capsys.readouterr().err
    mps = torch.device('mps')  # where it is used: float32, NCHW, no fused Adam
    assert devices.precision(devices.autocast(mps), mps) == 'float32 (the Apple GPU)'
    assert not fast_path.channels_last(MODELS['resnet50'](), mps) and fast_path.adam_options(mps) == {}


def test_the_agreement_check_passes_a_right_step_and_leaves_the_runs_random_numbers_alone():
    torch.manual_seed(5)
    # the CPU standing in for the Apple GPU; 'meta', for a device that cannot compute the step
    assert devices.step_agrees(torch.device('cpu')) and not devices.step_agrees(torch.device('meta'))
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)


@pytest.mark.parametrize('device, says', [('cuda', r'--device cuda: PyTorch sees no CUDA GPU here'),
                                          ('mps', r'--device mps: PyTorch sees no Apple GPU \(MPS\) here')])
def test_a_gpu_that_the_machine_has_not_is_one_line(monkeypatch, tmp_path, device, says):
    pretend(monkeypatch)
    one_line_error(main('--device', device, '--eval-only'), says + r'; use --device cpu \(or auto\)$')
    # set in main.py's line, never typed as a flag: the line is named, and the values it takes
    with open(os.path.join(ROOT, 'main.py'), encoding='utf-8') as f:
        (tmp_path / 'main.py').write_text(f.read().replace("device = 'auto'", f"device = '{device}'"), encoding='utf-8')
    one_line_error(main(script=str(tmp_path / 'main.py')), f"device = '{device}' at the top of main.py: PyTorch sees "
                   r"no .* here; use 'auto' or 'cpu'$")


@pytest.fixture
def restored(monkeypatch):
    """sys.stdout, sys.excepthook, the Ctrl-C handler and warnings as they were, after errors.install()."""
    for name in ('stdout', 'stderr', 'excepthook'):
        monkeypatch.setattr(sys, name, getattr(sys, name))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with warnings.catch_warnings():
        yield
    for s, handler in handlers.items():
        signal.signal(s, handler)


@pytest.mark.parametrize('argv', [['ipykernel_launcher.py', '-f', '/root/.local/share/jupyter/runtime/kernel-1.json'],
                                  ['main.py', '--model', 'vgg16', '--epochs', '0']])
def test_main_pasted_into_a_notebook_cell_reads_no_command_line_flags(monkeypatch, restored, tmp_path, argv):
    # a pasted cell has no __file__; sys.argv is the kernel's own (argparse took its '-f' for a flag of main.py's)
    monkeypatch.setattr(sys, 'argv', argv)
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(ROOT, 'main.py'), encoding='utf-8') as f:
        settings = f.read().split('\n# Image preprocessing')[0]  # up to the data: the settings read
    cell = {'__name__': '__main__'}
    exec(compile(settings, '<ipython-input-1>', 'exec'), cell)
    assert cell['num_epochs'] == 1 and cell['batch_size'] == 100 and cell['out'] is None


def test_mistakes_in_a_notebook_are_one_line_and_the_kernel_lives_on(monkeypatch, restored, capsys):
    # IPython shows a cell's (and %run's) exceptions with shell.showtraceback, never sys.excepthook
    shown = []
    shell = types.SimpleNamespace(kernel=object(), showtraceback=lambda exc_tuple=None, **kw: shown.append(exc_tuple))
    monkeypatch.setitem(sys.modules, 'IPython', types.SimpleNamespace(get_ipython=lambda: shell))
    errors.install()
    errors.install()  # main.py run twice in one kernel: wrapped once
    shell.showtraceback((Mistake, Mistake('--lr must be positive'), None))  # no exit: the kernel lives on
    assert capsys.readouterr().err == 'error: --lr must be positive\n' and shown == []
    shell.showtraceback((KeyboardInterrupt, KeyboardInterrupt(), None))  # the kernel's stop button
    assert capsys.readouterr().err.startswith('interrupted; ') and shown == []
    other = (ValueError, ValueError('a bug'), None)
    shell.showtraceback(other)  # anything else keeps IPython's own traceback
    assert shown == [other]
    assert not progress.progress(range(3), 'epoch 1').disable  # the notebook's bar shows, though no terminal


def test_output_in_a_console_encoding_without_the_character_does_not_crash(monkeypatch, restored):
    # Windows with output redirected writes in the locale's code page (cp949 on a Korean Windows)
    console = io.TextIOWrapper(io.BytesIO(), encoding='cp949', newline='\n')
    monkeypatch.setattr(sys, 'stdout', console)
    monkeypatch.setattr(sys, 'stderr', console)
    errors.install()
    print('resnet50 from C:\\Users\\José\\résumé.ckpt 한')
    console.flush()
    assert console.buffer.getvalue().decode('cp949') == 'resnet50 from C:\\Users\\Jos\\xe9\\r\\xe9sum\\xe9.ckpt 한\n'


def test_an_output_on_a_drive_with_nothing_mounted_is_one_line_not_a_hang(monkeypatch):
    # Windows: E:\ with no disk in it; the walk up to an existing folder ends at the drive's root
    out = os.path.abspath(os.path.join(os.sep, 'nowhere', 'results', 'm.ckpt'))
    root = os.path.splitdrive(out)[0] or '/'
    gone = {out, os.path.dirname(out), os.path.dirname(os.path.dirname(out)), os.path.abspath(os.sep)}
    monkeypatch.setattr(os.path, 'exists', lambda p, real=os.path.exists: os.path.abspath(p) not in gone and real(p))
    with pytest.raises(Mistake, match=re.escape(f': {root} is not there (no drive or disk mounted?)')):
        paths.check_output(out, '--out')
