"""main.py --report writes a report whose numbers match the console."""
import json
import re

import pytest
import torch
import torch.nn as nn
from PIL import Image

from scripts import main, run
from helpers.data import CLASSES, TensorLoader, decode
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
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['report.md']


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
    (tmp_path / 'r').mkdir()
    (tmp_path / 'r' / 'loss.png').write_bytes(b'an earlier run')  # an --eval-only report draws no loss
    # the fine-tuned model is saved over the checkpoint it started from: the report names the one it started from
    r = main('--data', image_folder, '--checkpoint', start, '--out', start, '--batch-size', 100, '--report',
             tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    md = (tmp_path / 'r' / 'report.md').read_text()
    assert f'`{before}`' in md and hashlib.sha256(start.read_bytes()).hexdigest() != before
    r = main('--data', image_folder, '--checkpoint', start, '--eval-only', '--report', tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / 'r' / 'loss.png').exists()
