"""main.py --report writes a report whose numbers match the console, and loses nobody's files."""
import errno
import json
import os
import re

import pytest
import torch
import torch.nn as nn
from PIL import Image

from scripts import ROOT, main, run
from helpers import report
from helpers.data import CLASSES, TensorLoader, decode
from helpers.errors import UsageError
from helpers.report import Gallery, confused_pairs


def table_rows(text, heading):
    section = text.split(heading, 1)[1].split('\n## ', 1)[0]
    return [line for line in section.splitlines() if line.startswith('| **')]


@pytest.mark.slow
def test_report_of_a_fine_tuning_run(image_folder, checkpoints, tmp_path):
    # on the CPU, where two runs with one seed compute exactly the same
    plain = main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                     '--out', tmp_path / 'a.ckpt', '--seed', 3, '--device', 'cpu')
    r = main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                 '--out', tmp_path / 'a.ckpt', '--seed', 3, '--device', 'cpu', '--report', tmp_path / 'report')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == plain.stdout.splitlines()[1:]  # the report changes nothing printed
    accuracy = r.stdout.strip().splitlines()[-1]
    md = (tmp_path / 'report' / 'report.md').read_text()
    assert accuracy in md and 'resnet50' in md and 'fine-tuning time' in md
    assert re.search(r'checkpoint sha256 \| `[0-9a-f]{64}`', md)
    rows = table_rows(md, '## Confusion matrix')
    counts = [[int(n) for n in row.split('|')[2:-1]] for row in rows]
    assert len(counts) == 10 and all(len(c) == 10 for c in counts)
    assert sum(map(sum, counts)) == 100  # every test image once
    correct = sum(counts[i][i] for i in range(10))
    assert accuracy.endswith(f' {100 * correct / 100} %')
    for name in ('loss.png', 'per_class.png', 'confusion.png', 'mistakes.png'):
        assert f']({name})' in md
        with Image.open(tmp_path / 'report' / name) as im:
            assert im.format == 'PNG' and im.size[0] >= 600 and im.size[1] >= 150
    # each most-confused pair is named in a sentence with the counts of the confusion matrix
    for a, b, ab, ba in confused_pairs(counts):
        assert f'**{CLASSES[a]} and {CLASSES[b]}**: {ab} {CLASSES[a]} image(s) were called {CLASSES[b]} ' \
               f'and {ba} {CLASSES[b]} image(s) {CLASSES[a]}.' in md


def test_eval_only_report_has_no_loss_curve(image_folder, checkpoints, tmp_path):
    r = main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--eval-only',
                 '--report', tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / 'r').iterdir())
    assert 'loss.png' not in files and {'confusion.png', 'per_class.png', 'mistakes.png', 'report.md'} <= set(files)
    assert 'none (--eval-only)' in (tmp_path / 'r' / 'report.md').read_text()


@pytest.mark.slow
def test_without_matplotlib_the_run_completes_and_says_how_to_get_it(image_folder, checkpoints, tmp_path):
    blocker = tmp_path / 'block' / 'matplotlib'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text("raise ImportError('blocked by the test')\n")
    r = run('main.py', '--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--eval-only',
            '--report', tmp_path / 'r', env={'PYTHONPATH': str(tmp_path / 'block')})
    assert r.returncode == 0, r.stderr
    assert 'pip install matplotlib' in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('Accuracy of the model on the test images:')
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == [report.MANIFEST, 'report.md']


def test_the_gallery_shows_the_most_confident_mistakes_as_the_data_holds_them(image_folder):
    images, labels = decode(image_folder, 'test')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))  # any model that makes mistakes
    gallery = Gallery(size=8, per_class=2)
    outputs = []
    with torch.no_grad():
        for x, y in TensorLoader(images, labels, batch_size=30):  # normalized, as main.py's test pass sees them
            outputs.append(model(x))
            gallery.add(x, y, outputs[-1])
    confidence, predicted = torch.cat(outputs).softmax(1).max(1)
    wrong = (predicted != labels).nonzero().flatten()
    expected = wrong[confidence[wrong].argsort(descending=True)][:8]
    assert len(gallery.mistakes) == 8
    for (conf, pixels, true, called), i in zip(gallery.mistakes, expected.tolist()):
        assert torch.equal(pixels, images[i])  # the real test image, before normalization
        assert (true, called) == (labels[i].item(), predicted[i].item()) and true != called
        assert abs(conf - confidence[i].item()) < 1e-6
    for cls, rows in gallery.correct.items():
        assert all(true == called == cls for _, _, true, called in rows)


@pytest.mark.slow
def test_training_curves_are_drawn_from_the_per_epoch_log(tmp_path):
    log = [dict(epoch=e, train_loss=2.0 / e, val_accuracy=10.0 * e, lr=0.1 / e, seconds=1.0) for e in range(1, 5)]
    (tmp_path / 'run.state.json').write_text(json.dumps(log))
    r = run('-m tools.training_curves', tmp_path / 'run.state.json', tmp_path / 'curves.png', '--title', 'test run')
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / 'curves.png') as im:
        assert im.format == 'PNG' and im.size[0] > 2 * im.size[1]  # three panels side by side
    assert (tmp_path / 'curves.png').stat().st_size < 200_000


@pytest.mark.slow
def test_the_report_names_the_checkpoint_it_started_from_and_keeps_no_stale_figures(image_folder, checkpoints,
                                                                                     tmp_path):
    import hashlib
    import shutil
    start = tmp_path / 'start.ckpt'
    shutil.copy(checkpoints['resnet50'], start)
    before = hashlib.sha256(start.read_bytes()).hexdigest()
    # the fine-tuned model is saved over the checkpoint it started from: the report names the one it started from
    r = main('--data', image_folder, '--checkpoint', start, '--out', start, '--batch-size', 100, '--report',
             tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    md = (tmp_path / 'r' / 'report.md').read_text()
    assert f'`{before}`' in md and hashlib.sha256(start.read_bytes()).hexdigest() != before
    assert (tmp_path / 'r' / 'loss.png').exists()  # an --eval-only report into the same folder draws no loss
    r = main('--data', image_folder, '--checkpoint', start, '--eval-only', '--report', tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / 'r' / 'loss.png').exists()


# A report loses nobody's files: written whole or not at all, only where nothing but an earlier report would go

def fields(tmp_path, **changes):
    """What main.py passes to report.write, for a tiny made-up test pass."""
    confusion = [[9 if i == j else (1 if j == (i + 1) % 10 else 0) for j in range(10)] for i in range(10)]
    return dict(dict(model_name='resnet50', checkpoint=None, checkpoint_sha256=None, device='cpu',
                     data_dir=str(tmp_path), train_images=0, test_images=100,
                     settings=dict(epochs=0, learning_rate=0.001, batch_size=100, seed=0, plain=False,
                                   precision='float32'),
                     step_losses=[], confusion=confusion, train_seconds=0.0, test_seconds=1.0,
                     accuracy_line='Accuracy of the model on the test images: 90.0 %'), **changes)


def files(folder):
    """{name: bytes} of every file in `folder`."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def earlier_report(tmp_path):
    """An earlier report, with a loss curve (a fine-tuning run), in tmp_path/'r'; {name: bytes} of its files."""
    report.write(tmp_path / 'r', **fields(tmp_path, step_losses=[2.0, 1.5, 1.2],
                                          settings=dict(fields(tmp_path)['settings'], epochs=1)))
    return files(tmp_path / 'r')


def test_a_report_goes_into_a_new_folder_or_replaces_an_earlier_report_whole(tmp_path):
    old = earlier_report(tmp_path)
    assert {'report.md', 'loss.png', 'per_class.png', 'confusion.png', report.MANIFEST} <= set(old)
    report.check_destination(tmp_path / 'r')  # an earlier report, as written, may be replaced
    report.write(tmp_path / 'r', **fields(tmp_path))  # --eval-only: no loss curve
    new = files(tmp_path / 'r')
    assert 'loss.png' not in new and 'none (--eval-only)' in new['report.md'].decode()
    listed = sorted(line.split('  ')[1] for line in new[report.MANIFEST].decode().splitlines())
    assert listed == sorted(set(new) - {report.MANIFEST})
    assert os.listdir(tmp_path) == ['r']  # no temporary folder left beside it
    (tmp_path / 'empty').mkdir()
    report.check_destination(tmp_path / 'empty')
    report.check_destination(tmp_path / 'new' / 'run1')
    assert sorted(os.listdir(tmp_path)) == ['empty', 'r']  # the check itself writes nothing


@pytest.mark.parametrize('own', [{'report.md': b'my own report', 'confusion.png': b'my figure'},  # --report .
                                 {'notes.txt': b'my notes'}])
def test_a_report_never_replaces_files_it_did_not_write(tmp_path, own):
    folder = tmp_path / 'mine'
    folder.mkdir()
    for name, data in own.items():
        (folder / name).write_bytes(data)
    with pytest.raises(UsageError, match=r'already holds files that are not a report of this main.py .*'
                                         r'choose a new or empty folder, e.g. --report reports/run1'):
        report.check_destination(folder)
    with pytest.raises(UsageError):  # write checks again itself: the folder may have changed during the run
        report.write(folder, **fields(tmp_path))
    assert files(folder) == own and os.listdir(tmp_path) == ['mine']


def test_an_earlier_report_is_kept_when_something_of_somebody_else_is_in_it(tmp_path):
    old = earlier_report(tmp_path)
    (tmp_path / 'r' / 'report.md').write_text('edited by hand after the run')
    with pytest.raises(UsageError, match='its report.md was changed after the report was written; move it out'):
        report.write(tmp_path / 'r', **fields(tmp_path))
    (tmp_path / 'r' / 'report.md').write_bytes(old['report.md'])
    (tmp_path / 'r' / 'notes.txt').write_text('mine')
    with pytest.raises(UsageError, match=r'holds an earlier report and other files too \(notes.txt\)'):
        report.write(tmp_path / 'r', **fields(tmp_path))
    assert files(tmp_path / 'r') == {**old, 'notes.txt': b'mine'}


@pytest.mark.parametrize('folder', ['.', 'docs', 'checkpoints', 'helpers', 'tests', 'tools', 'data', 'docs/run1',
                                    'tests/../docs', 'checkpoints/run1', '..'])
def test_a_report_never_goes_into_the_projects_own_folders(folder):
    # only checked, never written: a failing check must not overwrite the project's docs/report.md
    with pytest.raises(UsageError, match=r"(is in the project's \S+/ folder, which holds the project's own files"
                                         r'|is the project folder, or holds it); '
                                         r'choose a new or empty folder'):
        report.check_destination(os.path.join(ROOT, folder))


def test_a_report_never_goes_into_the_projects_folders_through_a_link(tmp_path):
    (tmp_path / 'docs-link').symlink_to(os.path.join(ROOT, 'docs'), target_is_directory=True)
    (tmp_path / 'project').symlink_to(ROOT, target_is_directory=True)
    for folder in (tmp_path / 'docs-link', tmp_path / 'docs-link' / 'run1', tmp_path / 'project' / 'checkpoints'):
        with pytest.raises(UsageError, match=r"project's (docs|checkpoints)/ folder"):
            report.check_destination(folder)


def test_a_report_is_refused_where_this_run_saves_its_checkpoint(tmp_path):
    with pytest.raises(UsageError, match=r'would also hold .*model.ckpt, which this run saves'):
        report.check_destination(tmp_path / 'run1', others=[tmp_path / 'run1' / 'model.ckpt'])
    report.check_destination(tmp_path / 'run1', others=[tmp_path / 'model.ckpt'])
    (tmp_path / 'a-file').write_text('x')
    with pytest.raises(UsageError, match='a-file is a file; choose a new or empty folder'):
        report.check_destination(tmp_path / 'a-file')


def interrupt_at(calls, n, what, do_first=False):
    """A stand-in for `what` that raises KeyboardInterrupt at its `n`-th call (after doing it, with
    `do_first`), and otherwise does what `what` does."""
    def stand_in(*args, **kwargs):
        calls.append(args)
        if len(calls) == n and not do_first:
            raise KeyboardInterrupt
        result = what(*args, **kwargs)
        if len(calls) == n:
            raise KeyboardInterrupt
        return result
    return stand_in


@pytest.mark.parametrize('where', ['drawing', 'between the renames'])
def test_ctrl_c_while_replacing_an_earlier_report_keeps_it_whole(tmp_path, monkeypatch, where):
    from matplotlib.figure import Figure
    old = earlier_report(tmp_path)
    calls = []
    if where == 'drawing':  # the second figure: the first is written, the earlier ones were not removed
        monkeypatch.setattr(Figure, 'savefig', interrupt_at(calls, 2, Figure.savefig))
    else:  # the earlier report has stepped aside, the new one has not yet taken its name
        monkeypatch.setattr(os, 'rename', interrupt_at(calls, 2, os.rename))
    with pytest.raises(KeyboardInterrupt):
        report.write(tmp_path / 'r', **fields(tmp_path))
    assert len(calls) >= 2
    assert files(tmp_path / 'r') == old
    assert os.listdir(tmp_path) == ['r']  # no temporary folder left


@pytest.mark.parametrize('where', ['savefig', 'report.md'])
@pytest.mark.parametrize('earlier', [True, False])
def test_a_full_disk_ends_in_one_line_and_keeps_the_earlier_report(tmp_path, monkeypatch, where, earlier):
    from matplotlib.figure import Figure
    old = earlier_report(tmp_path) if earlier else None
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def savefig(fig, path, *args, **kwargs):  # half a PNG, then the disk is full
        with open(path, 'wb') as f:
            f.write(b'\x89PNG half')
        raise full

    def open_(path, mode='r', *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if os.path.basename(path) == 'report.md' and 'w' in mode:
            f.close()
            raise full
        return f
    if where == 'savefig':
        monkeypatch.setattr(Figure, 'savefig', savefig)
    else:
        monkeypatch.setattr(report, 'open', open_, raising=False)
    folder = tmp_path / 'r' if earlier else tmp_path / 'new' / 'r'
    with pytest.raises(UsageError, match=r'cannot write the report in .*r \(No space left on device\); '
                                         r'(its earlier report is as it was|nothing was written); free some space'):
        report.write(folder, **fields(tmp_path))
    if earlier:
        assert files(folder) == old
    assert os.listdir(tmp_path) == (['r'] if earlier else [])  # no temporary file, nor a folder made for it


def test_report_md_is_utf8_whatever_the_locale(tmp_path, monkeypatch):
    # Windows in Korea: open() without an encoding writes cp949
    def cp949_open(path, mode='r', *args, encoding=None, **kwargs):
        if 'b' not in mode and encoding is None:
            encoding = 'cp949'
        return open(path, mode, *args, encoding=encoding, **kwargs)
    monkeypatch.setattr(report, 'open', cp949_open, raising=False)
    monkeypatch.setattr(report, '_pyplot', lambda: None)  # figures play no part here
    data = tmp_path / '데이터'
    report.write(tmp_path / 'r', **fields(tmp_path, data_dir=str(data), checkpoint='체크포인트/é.ckpt',
                                          checkpoint_sha256='0' * 64))
    md = (tmp_path / 'r' / 'report.md').read_bytes().decode('utf-8')
    assert f'`{data}`' in md and '`체크포인트/é.ckpt`' in md
    report.check_destination(tmp_path / 'r')  # and its manifest reads back: it is known as an earlier report
