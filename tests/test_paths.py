"""The one write rule (check_output before any work, write_atomic for the write) and errors.install, by case."""
import errno
import io
import os
import signal
import sys

import pytest
import torch

from helpers import checkpoints, errors, paths
from helpers.errors import Mistake


def error_of(call, *args, **kwargs):
    with pytest.raises(Mistake) as e:
        call(*args, **kwargs)
    return e.value.code


@pytest.fixture
def handlers(monkeypatch):  # {signal: handler} that errors.install() sets, kept off this process; streams restored
    for name in ('stdout', 'stderr', 'excepthook'):
        monkeypatch.setattr(sys, name, getattr(sys, name))
    monkeypatch.setattr(signal, 'signal', (handlers := {}).__setitem__)
    return handlers


@pytest.mark.parametrize('flag, example', [(f, '--out outputs/model.ckpt') for f in ('--out', 'the default --out')]
                         + [('out in main.py', "out = 'outputs/model.ckpt'")])
def test_out_refusals_name_the_setting_once_then_an_example_as_it_is_typed(tmp_path, flag, example):
    (tmp_path / 'notes.pt').write_text('my notes')
    given = {'example': example} if '=' in example else {}  # main.py's line: settings.py gives its example
    for path, reading in ((tmp_path, ()), (notes := tmp_path / 'notes.pt', ()), (notes, [notes])):
        said = error_of(paths.check_output, path, flag, reading, **given)
        assert said.startswith(f'error: {flag} ') and said.endswith(f', e.g. {example}'), said
        assert said[:-len(example)].count(flag) == 1, said  # not `choose another the default --out`


def test_a_255_byte_out_name_is_refused_before_the_run_and_never_told_to_free_space(tmp_path):
    out = tmp_path / ('m' * 250 + '.ckpt')  # a name the disk takes, but not write_atomic's longer temporary one
    said = error_of(paths.check_output, out, '--out')
    assert f'cannot write in {tmp_path}' in said and 'free some space' not in said and os.listdir(tmp_path) == []
    out = tmp_path / ('m' * 300 + '.ckpt')  # and if the write fails all the same: space is not the cause
    assert 'free some space' not in error_of(paths.write_atomic, out, lambda f: f.write(b'x'))


class FillingDisk(io.FileIO):  # a file on a disk that takes 4 KiB more, then is full
    def write(self, data):
        if self.tell() + len(data) > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_during_a_save_says_so_not_torchs_internals(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'fdopen', lambda fd, mode: FillingDisk(fd, mode))  # write_atomic's temporary file
    said = error_of(checkpoints.save, {'bias': torch.ones(10), 'weight': torch.ones(10_000)}, str(tmp_path / 'x.ckpt'))
    assert said.endswith(f'x.ckpt ({os.strerror(errno.ENOSPC)}); free some space or choose another place'), said
    assert os.listdir(tmp_path) == []


def test_a_plain_run_over_an_earlier_output_names_the_file_it_replaced(tmp_path, capsys):
    (out := tmp_path / 'outputs' / 'resnet50_final.ckpt').parent.mkdir()
    out.write_bytes(b'an earlier run')
    for data in (b'first', b'second'):  # this run's, then the same file rewritten (grade.py's table, a state)
        paths.write_atomic(out, lambda f: f.write(data))
    assert capsys.readouterr().err == f'replaced the earlier {out}\n' and out.read_bytes() == b'second'


def test_sigterm_during_a_save_is_ctrl_c_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, handlers, capsys):
    (tmp_path / 'x.ckpt').write_bytes(b'earlier')
    errors.install()
    stop = handlers[signal.SIGTERM]  # a notebook's stop button, kill, a cluster's time limit
    monkeypatch.setattr(os, 'replace', lambda *args: stop(signal.SIGTERM, None))
    with pytest.raises(SystemExit) as e:
        paths.write_atomic(tmp_path / 'x.ckpt', lambda f: f.write(b'new'))
    assert e.value.code == 128 + signal.SIGTERM and capsys.readouterr().err.startswith('\ninterrupted; ')
    assert os.listdir(tmp_path) == ['x.ckpt'] and (tmp_path / 'x.ckpt').read_bytes() == b'earlier'


def test_a_mistake_naming_a_cp949_path_prints_on_a_strict_console_with_no_false_hint(monkeypatch, handlers):
    name = b'/data/\xb5\xa5'.decode('utf-8', 'surrogateescape')  # Korean Windows' zip on Linux: not printable
    monkeypatch.setattr(sys, 'stderr', io.TextIOWrapper(io.BytesIO(), encoding='utf-8', newline='\n'))
    errors.install()
    for mistake in (paths.missing(name, 'data folder', 'check the name'), Mistake(f'--init {name} is not ...')):
        print(mistake.code, file=sys.stderr, flush=True)  # as Python prints a SystemExit's text
    for line in sys.stderr.buffer.getvalue().decode().splitlines():  # no backslash hint: the name holds no escape
        assert '/data/\\udcb5\\udca5' in line and 'backslash' not in line, line
