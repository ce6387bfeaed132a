"""main.py --report DIR: a report that holds the run as printed and loses nobody's files. `check` and `write` are
called as main.py calls them, with a made-up run."""
import errno
import functools
import os
import re
import shutil
from unittest import mock

import pytest
import torch

from helpers import report
from helpers.errors import Mistake
from helpers.paths import PROJECT
from conftest import symlink_or_skip

ACCURACY = 'Accuracy of the model on the test images: 61.3 %'
CHOOSE = 'choose a new or empty folder, e.g. --report reports/run1'


@functools.cache
def run():
    """What main.py passes to report.write: a fine-tuning run with a random confusion matrix."""
    g = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 20, (10, 10), generator=g) + 60 * torch.eye(10, dtype=torch.long)
    return dict(model='resnet50', checkpoint='checkpoints/resnet50.ckpt', checkpoint_sha256='ab' * 32, device='cpu',
                precision='bf16 autocast', data_dir='./data', train_images=50000, test_images=10000, epochs=1, seed=3,
                learning_rate=0.001, batch_size=100, plain=False, step_losses=[2.3, 1.9, 1.7, 1.2],
                confusion=confusion.tolist(), train_seconds=12.5, test_seconds=3.25, accuracy_line=ACCURACY)


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope='module')
def drawn(tmp_path_factory):
    report.write(report.check(folder := tmp_path_factory.mktemp('drawn') / 'r'), run())  # written once, then copied
    return folder


def test_the_report_holds_the_run_as_printed(drawn):
    md, confusion = (drawn / 'report.md').read_text(encoding='utf-8'), run()['confusion']
    assert md.startswith(report.HEADER + '\n') and f'```\n{ACCURACY}\n```' in md
    assert '| checkpoint sha256 | `' + 'ab' * 32 + '` |' in md and '| fine-tuning time | 12.5 s |' in md
    for i, (name, row) in enumerate(zip(report.CLASSES, confusion)):
        assert f'| {name} | {row[i]} | {sum(row)} | {100 * row[i] / sum(row):.1f} % |' in md
        assert f'| **{name}** | ' + ' | '.join(map(str, row)) + ' |' in md
    assert os.listdir(drawn) == ['report.md']


def test_a_report_goes_into_a_new_or_empty_folder_and_the_check_writes_nothing(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / '.DS_Store').write_bytes(b'a file browser was here')
    assert report.check(tmp_path / 'empty') == os.path.realpath(tmp_path / 'empty') and report.check(tmp_path / 'a/b')
    assert sorted(os.listdir(tmp_path)) == ['empty']


def test_an_earlier_report_with_the_students_notes_added_is_never_replaced(drawn, tmp_path):
    shutil.copytree(drawn, tmp_path / 'r')
    with open(tmp_path / 'r' / 'report.md', 'a', encoding='utf-8') as f:
        f.write('My analysis: cats and dogs look alike.\n')
    with pytest.raises(Mistake, match=NOT_OURS):
        report.check(tmp_path / 'r')


def test_running_the_same_report_command_again_replaces_the_earlier_report(drawn, tmp_path, capsys):
    shutil.copytree(drawn, tmp_path / 'r')
    (tmp_path / 'r' / 'mistakes.png').write_bytes(b'\x89PNG')  # a figure an earlier version's report drew
    report.write(report.check(tmp_path / 'r'), run() | dict(epochs=0, step_losses=[]))  # now --eval-only: no loss curve
    md, made = (tmp_path / 'r' / 'report.md').read_text(encoding='utf-8'), sorted(os.listdir(tmp_path / 'r'))
    assert made == ['report.md']
    assert '| fine-tuning | none (--eval-only) |' in md and 'fine-tuning time' not in md
    assert capsys.readouterr().err.endswith(f"Report written to {os.path.realpath(tmp_path / 'r')}{os.sep}report.md\n")


NOT_OURS = 'holds a report.md that main.py did not write, or that was changed since'


@pytest.mark.parametrize('own, says', [({'notes.txt': b'mine'}, r"holds files that are not a report's \(notes.txt\)"),
                                       ({'report.md': b'my own report'}, NOT_OURS),
                                       ({'report.md': report.HEADER.encode() + b'\nearlier'}, NOT_OURS)])
def test_a_report_never_goes_into_a_folder_holding_other_files(tmp_path, own, says):
    (tmp_path / 'mine').mkdir()
    for name, data in own.items():
        (tmp_path / 'mine' / name).write_bytes(data)
    for call in (lambda: report.check(tmp_path / 'mine'), lambda: report.write(tmp_path / 'mine', run())):
        with pytest.raises(Mistake, match=f'mine {says}.*; {CHOOSE}'):
            call()  # write checks again: the folder may have changed during the run
    assert files(tmp_path / 'mine') == own


@pytest.mark.parametrize('folder', ['.', '..', 'docs', 'helpers', 'tests/../checkpoints', 'LINK', 'LINK/docs',
                                    'checkpoints/run1', 'LINK/checkpoints/run1'])
def test_a_report_never_goes_into_the_projects_folders_of_files_or_checkpoints(tmp_path, folder):
    if 'LINK' in folder:  # `--report .` or `--report docs`: the one rule, a folder of other files, refuses them
        symlink_or_skip(PROJECT, tmp_path / 'LINK')
    says = 'only the shipped checkpoints' if 'run1' in folder else f"holds files that are not a report's .*; {CHOOSE}"
    with pytest.raises(Mistake, match=says):
        report.check(os.path.join(tmp_path if folder[0].isupper() else PROJECT, folder))


def test_a_report_is_refused_where_this_run_saves_its_checkpoint_or_over_a_file(tmp_path):
    for out in ('run1/model.ckpt', 'run1'):
        shown = re.escape(os.path.normpath(out))
        with pytest.raises(Mistake, match=f'run1 would hold .*{shown}, which this run saves'):
            report.check(tmp_path / 'run1', others=[None, tmp_path / out])
    report.check(tmp_path / 'run1', others=[tmp_path / 'model.ckpt'])
    (tmp_path / 'a-file').write_text('x')
    with pytest.raises(Mistake, match='a-file is a file, not a folder; choose another --report'):
        report.check(tmp_path / 'a-file')


@pytest.mark.parametrize('failure, stop', [(OSError(errno.ENOSPC, 'No space left on device'), Mistake),
                                           (KeyboardInterrupt(), KeyboardInterrupt)])  # Ctrl-C
def test_a_full_disk_keeps_the_earlier_report(drawn, tmp_path, monkeypatch, failure, stop):
    shutil.copytree(drawn, tmp_path / 'r')
    before = files(tmp_path / 'r')
    monkeypatch.setattr(os, 'replace', mock.Mock(side_effect=failure))  # once report.md is written
    with pytest.raises(stop, match='report.md \\(No space left on device\\); free some space or choose another place'
                       if stop is Mistake else None):
        report.write(tmp_path / 'r', run() | dict(epochs=0))
    assert files(tmp_path / 'r') == before  # and no temporary file


def test_report_md_is_utf8_and_read_back_whatever_the_locale(tmp_path):
    folder = tmp_path / '보고서 é'
    report.write(report.check(folder), run() | dict(data_dir='데이터/cifar', checkpoint='체크.ckpt'))
    assert '`데이터/cifar`' in (md := (folder / 'report.md').read_bytes().decode()) and '`체크.ckpt`' in md
    report.check(folder)  # known again as an earlier report
