"""main.py --report DIR: a report that holds the run as printed and loses nobody's files. `check` and `write` are
called as main.py calls them, with a made-up run."""
import errno
import functools
import os
import re
import shutil
from unittest import mock

import PIL.Image
import pytest
import torch

from helpers import report
from helpers.errors import Mistake
from helpers.paths import PROJECT
from conftest import symlink_or_skip

ACCURACY = 'Accuracy of the model on the test images: 61.3 %'
CHOOSE = 'choose a new or empty folder, e.g. --report reports/run1'
NOT_OURS = 'holds files not written by main.py, or changed since'


@functools.cache
def run():
    """What main.py passes to report.write: a fine-tuning run with a random confusion matrix."""
    g = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 20, (10, 10), generator=g) + 60 * torch.eye(10, dtype=torch.long)
    return dict(model='resnet50', checkpoint='checkpoints/resnet50.ckpt', checkpoint_sha256='ab' * 32, device='cpu',
                precision='bf16 autocast', data_dir='./data', train_images=50000, test_images=10000, epochs=1, seed=3,
                learning_rate=0.001, batch_size=100, plain=False, confusion=confusion.tolist(), train_seconds=12.5,
                test_seconds=3.25, accuracy_line=ACCURACY)


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope='module')
def drawn(tmp_path_factory):
    report.write(report.check(folder := tmp_path_factory.mktemp('drawn') / 'r'), run())  # written once, then copied
    return folder


@pytest.fixture(autouse=True)
def redrawn(drawn, monkeypatch):  # no picture drawn again (a second each on 2 cores): the first one stands in
    monkeypatch.setattr(report, '_png', lambda record, f: f.write((drawn / 'report.png').read_bytes()))


def test_the_report_holds_the_run_as_printed_and_report_png_opens_as_a_picture(drawn):
    md, confusion = (drawn / 'report.md').read_text(encoding='utf-8'), run()['confusion']
    assert md.startswith(report.HEADER + '\n') and f'```\n{ACCURACY}\n```' in md
    assert '| checkpoint sha256 | `' + 'ab' * 32 + '` |' in md and '| fine-tuning time | 12.5 s |' in md
    for i, (name, row) in enumerate(zip(report.CLASSES, confusion)):
        assert f'| {name} | {row[i]} | {sum(row)} | {100 * row[i] / sum(row):.1f} % |' in md
        assert f'| **{name}** | ' + ' | '.join(map(str, row)) + ' |' in md
    assert sorted(os.listdir(drawn)) == ['report.md', 'report.png']
    with PIL.Image.open(drawn / 'report.png') as picture:  # per-class accuracy and the confusion matrix, 10 rows each
        assert picture.format == 'PNG' and 800 <= picture.width <= 1600 and 400 <= picture.height <= 900
        assert picture.text['Software'] == report.SOFTWARE  # how a later --report knows it for ours


def test_a_report_goes_into_a_new_or_empty_folder_and_the_check_writes_nothing(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / '.DS_Store').write_bytes(b'a file browser was here')
    assert report.check(tmp_path / 'empty') == os.path.realpath(tmp_path / 'empty') and report.check(tmp_path / 'a/b')
    assert sorted(os.listdir(tmp_path)) == ['empty']


def test_running_the_same_report_command_again_replaces_the_earlier_report(drawn, tmp_path, capsys):
    shutil.copytree(drawn, tmp_path / 'r')
    report.write(report.check(tmp_path / 'r'), run() | dict(epochs=0))  # now --eval-only
    md, made = (tmp_path / 'r' / 'report.md').read_text(encoding='utf-8'), sorted(os.listdir(tmp_path / 'r'))
    assert made == ['report.md', 'report.png']
    assert '| fine-tuning | none (--eval-only) |' in md and 'fine-tuning time' not in md
    assert capsys.readouterr().err.endswith(f"Report written to {tmp_path / 'r'}: report.md, report.png\n")


def test_over_an_earlier_report_the_students_notes_loss_png_and_confusion_png_are_never_removed(drawn, tmp_path):
    shutil.copytree(drawn, tmp_path / 'r')  # loss.png, confusion.png: names an older version drew, not ours to remove
    for name in ('loss.png', 'confusion.png'):
        (tmp_path / 'r' / name).write_bytes(b'\x89PNG\r\n mine')
    with open(tmp_path / 'r' / 'report.md', 'a', encoding='utf-8') as f:
        f.write('My analysis: cats and dogs look alike.\n')
    before = files(tmp_path / 'r')
    with pytest.raises(Mistake, match=f'{NOT_OURS} \\(confusion.png, loss.png, report.md\\)'):
        report.write(tmp_path / 'r', run())  # checked again at the write, as before the run
    assert files(tmp_path / 'r') == before


def test_report_naming_a_file_like_report_md_is_refused_and_makes_no_folder(tmp_path):
    (tmp_path / 'a-file').write_text('x')  # the rule, once: a file, or a name ending as the report's files do
    for given in ('reports/run1/report.md', 'run1/REPORT.PNG', 'a-file'):
        shown = re.escape(os.path.normpath(given))  # Windows shows it with backslashes
        with pytest.raises(Mistake, match=f'{shown} names a file: --report takes the folder .*; {CHOOSE}'):
            report.check(tmp_path / given)
    assert os.listdir(tmp_path) == ['a-file']


@pytest.mark.parametrize('own, says', [({'notes.txt': b'mine'}, NOT_OURS + r' \(notes.txt\)'),
                                       ({'report.md': b'my own report'}, NOT_OURS + r' \(report.md\)'),
                                       ({'report.md': report.HEADER.encode() + b'\nearlier'}, NOT_OURS),
                                       ({'report.png': b'\x89PNG\r\n mine'}, NOT_OURS + r' \(report.png\)'),
                                       ({'confusion.png': b'\x89PNG\r\n'}, NOT_OURS + r' \(confusion.png\)')])
def test_a_report_never_goes_into_a_folder_holding_other_files(tmp_path, own, says):
    # the student's confusion.png alone: named as what is there, never as a report.md that is not
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
    says = 'only the shipped checkpoints' if 'run1' in folder else f'{NOT_OURS} .*; {CHOOSE}'
    with pytest.raises(Mistake, match=says):
        report.check(os.path.join(tmp_path if folder[0].isupper() else PROJECT, folder))


def test_a_report_is_refused_where_this_run_saves_its_checkpoint(tmp_path):
    for out in ('run1/model.ckpt', 'run1'):
        shown = re.escape(os.path.normpath(out))
        with pytest.raises(Mistake, match=f'run1 would hold .*{shown}, which this run saves'):
            report.check(tmp_path / 'run1', others=[None, tmp_path / out])
    report.check(tmp_path / 'run1', others=[tmp_path / 'model.ckpt'])


@pytest.mark.parametrize('failure, stop', [(OSError(errno.ENOSPC, 'No space left on device'), Mistake),
                                           (KeyboardInterrupt(), KeyboardInterrupt)])  # Ctrl-C
def test_a_full_disk_keeps_the_earlier_report(drawn, tmp_path, monkeypatch, failure, stop):
    shutil.copytree(drawn, tmp_path / 'r')
    before = files(tmp_path / 'r')
    monkeypatch.setattr(os, 'replace', mock.Mock(side_effect=failure))  # once report.png is written
    with pytest.raises(stop, match='report.png \\(No space left on device\\); free some space or choose another place'
                       if stop is Mistake else None):
        report.write(tmp_path / 'r', run() | dict(epochs=0))
    assert files(tmp_path / 'r') == before  # and no temporary file


def test_cp949_names_unpacked_on_linux_make_a_utf8_report_known_again(tmp_path):
    # Hangul names; and a zip's made on Korean Windows, which Linux gives as surrogates (\udcXX) that UTF-8 refuses
    cp949 = b'\xb5\xa5\xc0\xcc\xc5\xcd'.decode('utf-8', 'surrogateescape')
    report.write(report.check(folder := tmp_path / '보고서 é'), run() | dict(data_dir=cp949, checkpoint='체크.ckpt'))
    md = (folder / 'report.md').read_bytes().decode()  # UTF-8 whatever the locale; the bytes shown as printed
    assert '`\\udcb5\\udca5\\udcc0' in md and '`체크.ckpt`' in md
    report.check(folder)  # known again as an earlier report
