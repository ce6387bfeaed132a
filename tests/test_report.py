"""main.py --report writes a report whose numbers match the console."""
import re

from PIL import Image

from conftest import run_main


def table_rows(text, heading):
    section = text.split(heading, 1)[1].split('\n## ', 1)[0]
    return [line for line in section.splitlines() if line.startswith('| **')]


def test_report_of_a_fine_tuning_run(image_folder, checkpoints, tmp_path):
    plain = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                     '--out', tmp_path / 'a.ckpt', '--seed', 3)
    r = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                 '--out', tmp_path / 'a.ckpt', '--seed', 3, '--report', tmp_path / 'report')
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
    for name in ('loss.png', 'per_class.png', 'confusion.png'):
        assert f']({name})' in md
        with Image.open(tmp_path / 'report' / name) as im:
            assert im.format == 'PNG' and im.size[0] >= 600 and im.size[1] >= 350


def test_eval_only_report_has_no_loss_curve(image_folder, checkpoints, tmp_path):
    r = run_main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--eval-only',
                 '--report', tmp_path / 'r')
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / 'r').iterdir())
    assert files == ['confusion.png', 'per_class.png', 'report.md']
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
