"""main.py --report writes a report whose numbers match the console."""
import json
import re

import torch
import torch.nn as nn
from PIL import Image

from conftest import run_main
from helpers.data import CLASSES, TensorLoader, decode
from helpers.report import Gallery, confused_pairs


def table_rows(text, heading):
    section = text.split(heading, 1)[1].split('\n## ', 1)[0]
    return [line for line in section.splitlines() if line.startswith('| **')]


def test_report_of_a_fine_tuning_run(image_folder, checkpoints, tmp_path):
    # on the CPU, where two runs with one seed compute exactly the same
    plain = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                     '--out', tmp_path / 'a.ckpt', '--seed', 3, '--device', 'cpu')
    r = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
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
    r = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--eval-only',
                 '--report', tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / 'r').iterdir())
    assert 'loss.png' not in files and {'confusion.png', 'per_class.png', 'mistakes.png', 'report.md'} <= set(files)
    assert 'none (--eval-only)' in (tmp_path / 'r' / 'report.md').read_text()


def test_without_matplotlib_the_run_completes_and_says_how_to_get_it(image_folder, checkpoints, tmp_path):
    blocker = tmp_path / 'block' / 'matplotlib'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text("raise ImportError('blocked by the test')\n")
    import os
    import subprocess
    import sys
    from conftest import ROOT
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'block'))
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), '--data', image_folder, '--checkpoint',
                        checkpoints['resnet50'], '--eval-only', '--report', tmp_path / 'r'],
                       capture_output=True, text=True, env=env, cwd=ROOT)
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


def test_training_curves_are_drawn_from_the_per_epoch_log(tmp_path):
    log = [dict(epoch=e, train_loss=2.0 / e, val_accuracy=10.0 * e, lr=0.1 / e, seconds=1.0) for e in range(1, 5)]
    (tmp_path / 'run.state.json').write_text(json.dumps(log))
    import subprocess
    import sys
    from conftest import ROOT
    r = subprocess.run([sys.executable, '-m', 'tools.training_curves', str(tmp_path / 'run.state.json'),
                        str(tmp_path / 'curves.png'), '--title', 'test run'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / 'curves.png') as im:
        assert im.format == 'PNG' and im.size[0] > 2 * im.size[1]  # three panels side by side
    assert (tmp_path / 'curves.png').stat().st_size < 200_000
