"""`main.py --report DIR`: report.md to paste, written whole into a new or empty folder or over an earlier one."""
import contextlib
import hashlib
import os
import sys

from helpers.data import CLASSES
from helpers.errors import Mistake
from helpers.paths import check_output, inside, shown, write_atomic

HEADER = '# CIFAR-10 run report (python main.py --report)'  # how an earlier report is known
# figures an earlier version's report drew beside its report.md
FIGURES = ('loss.png', 'per_class.png', 'confusion.png', 'mistakes.png', 'confused_pair_correct.png')
# what file browsers and Jupyter leave in a folder they showed, and an older version's manifest
LITTER = {'.DS_Store', 'Thumbs.db', 'desktop.ini', '.ipynb_checkpoints', '.report.sha256'}


def _stamp(body):
    """report.md's last line: how an earlier report, unchanged since it was written, is known."""
    return f'<!-- main.py --report; sha256 of the lines above: {hashlib.sha256(body.encode()).hexdigest()} -->\n'


def check(folder, others=()):
    """Stop in one line unless the report can go into `folder` losing no file (`others`: --out); its real path."""
    real = os.path.realpath(folder := os.path.expanduser(os.fspath(folder)))

    def refuse(why):
        raise Mistake(f'--report {shown(folder)} {why}; choose a new or empty folder, e.g. --report reports/run1')
    for other in filter(None, others):
        if inside(os.path.expanduser(os.fspath(other)), real):
            refuse(f'would hold {shown(other)}, which this run saves (or give another --out)')
    names, text = sorted(set(os.listdir(real)) - LITTER) if os.path.isdir(real) else [], ''
    with contextlib.suppress(OSError), open(os.path.join(real, 'report.md'), 'rb') as f:
        text = f.read().decode('utf-8', 'replace')
    others, body = [n for n in names if n not in {'report.md', *FIGURES}], text[:text.rfind('<!--')]
    if others:
        refuse(f"holds files that are not a report's ({', '.join(others[:3])}{', ...' * (len(others) > 3)})")
    if names and not (body.startswith(HEADER) and text == body + _stamp(body)):
        refuse('holds a report.md that main.py did not write, or that was changed since (move it out)')
    check_output(os.path.join(real, 'report.md'), '--report', suffixes=('.md',), begins=(HEADER.encode(),))
    return real


def _markdown(r):
    def row(*cells):
        return '| ' + ' | '.join(map(str, cells)) + ' |'
    tuned, confusion = r['epochs'] > 0, r['confusion']
    per_class = [100 * row[i] / max(sum(row), 1) for i, row in enumerate(confusion)]
    lines = [HEADER, '', '| | |', '| --- | --- |', row('model', r['model']),
             row('checkpoint', f"`{r['checkpoint']}`" if r['checkpoint'] else 'none: random weights'),
             row('checkpoint sha256', f"`{r['checkpoint_sha256']}`") if r['checkpoint'] else None,
             row('device', f"{r['device']}, {r['precision']}"),
             row('data', f"`{r['data_dir']}`: {r['train_images']} training, {r['test_images']} test images"),
             row('fine-tuning', f"{r['epochs']} epoch(s), Adam, lr {r['learning_rate']}, batch {r['batch_size']}, "
                 f"seed {r['seed']}" + ', plain pipeline' * bool(r['plain']) if tuned else 'none (--eval-only)'),
             row('fine-tuning time', f"{r['train_seconds']:.1f} s") if tuned else None,
             row('test time', f"{r['test_seconds']:.1f} s"), '', '```', r['accuracy_line'], '```', '',
             '## Per-class accuracy', '', row('class', 'correct', 'images', 'accuracy'), '| --- | ---: | ---: | ---: |',
             *(row(c, n[i], sum(n), f'{per_class[i]:.1f} %') for i, (c, n) in enumerate(zip(CLASSES, confusion))),
             '', '## Confusion matrix', '', 'Rows are the true class, columns the predicted one.', '',
             row('', *CLASSES), '| --- |' + ' ---: |' * 10, *(row(f'**{c}**', *n) for c, n in zip(CLASSES, confusion))]
    text = '\n'.join(line for line in lines if line is not None) + '\n'
    return text + _stamp(text)


def write(folder, record):
    """report.md in `folder`, whole or not at all (a full disk, Ctrl-C: the earlier one as it was)."""
    real = check(folder)  # checked again: the folder may have changed during the run
    write_atomic(os.path.join(real, 'report.md'), lambda f: f.write(_markdown(record).encode('utf-8')))
    for name in set(FIGURES).intersection(os.listdir(real)):  # an earlier version's figures, not of this run
        os.remove(os.path.join(real, name))
    print(f"Report written to {os.path.join(os.fspath(folder), 'report.md')}", file=sys.stderr)
