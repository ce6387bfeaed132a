"""`main.py --report DIR`: report.md to paste and report.png (per-class accuracy, confusion matrix) for a Word or
HWP report, each written whole into a new or empty folder or over an earlier report."""
import contextlib
import hashlib
import os
import sys

from helpers.data import CLASSES
from helpers.errors import Mistake
from helpers.paths import check_output, inside, shown, write_atomic

HEADER = '# CIFAR-10 run report (python main.py --report)'  # how an earlier report.md is known
SOFTWARE = 'python main.py --report'  # report.png's PNG text chunk: how an earlier one is known
EXAMPLE = '--report reports/run1'
LITTER = {'.DS_Store', 'Thumbs.db', 'desktop.ini', '.ipynb_checkpoints', '.report.sha256'}  # browsers', Jupyter's


def _stamp(body):
    """report.md's last line: how an earlier report, unchanged since it was written, is known."""
    return f'<!-- main.py --report; sha256 of the lines above: {hashlib.sha256(body.encode()).hexdigest()} -->\n'


def _ours(path):
    """True for a report.md (unchanged since) or a report.png that main.py wrote."""
    data = b''
    if os.path.basename(path) in ('report.md', 'report.png') and os.path.isfile(path):  # a pipe would block
        with contextlib.suppress(OSError), open(path, 'rb') as f:
            data = f.read()
    if path.endswith('.png'):
        return data.startswith(b'\x89PNG') and b'Software\0' + SOFTWARE.encode() in data
    body = (text := data.decode('utf-8', 'replace'))[:text.rfind('<!--')]
    return body.startswith(HEADER) and text == body + _stamp(body)


def check(folder, others=()):
    """Stop in one line unless the report can go into `folder` losing no file (`others`: --out); its real path."""
    real = os.path.realpath(folder := os.path.expanduser(os.fspath(folder)))

    def refuse(why):
        raise Mistake(f'--report {shown(folder)} {why}; choose a new or empty folder, e.g. {EXAMPLE}')
    if os.path.isfile(real) or real.lower().endswith(('.md', '.png')) and not os.path.isdir(real):
        refuse('names a file: --report takes the folder for report.md and report.png')
    for other in filter(None, others):
        if inside(os.path.expanduser(os.fspath(other)), real):
            refuse(f'would hold {shown(other)}, which this run saves (or give another --out)')
    names = sorted(set(os.listdir(real)) - LITTER) if os.path.isdir(real) else []
    theirs = [name for name in names if not _ours(os.path.join(real, name))]
    if theirs:
        refuse(f"holds files not written by main.py, or changed since ({', '.join(theirs[:3])}"
               f"{', ...' * (len(theirs) > 3)})")
    check_output(os.path.join(real, 'report.md'), '--report', suffixes=('.md',), begins=(HEADER.encode(),),
                 example=EXAMPLE)
    return real


def _per_class(confusion):
    return [100 * row[i] / max(sum(row), 1) for i, row in enumerate(confusion)]


def _markdown(r):
    def row(*cells):
        return '| ' + ' | '.join(map(str, cells)) + ' |'
    tuned, confusion, per_class = r['epochs'] > 0, r['confusion'], _per_class(r['confusion'])
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
    text = text.encode('utf-8', 'backslashreplace').decode()  # names in another encoding (cp949 bytes on Linux)
    return text + _stamp(text)


def _png(r, f):
    """report.png: per-class accuracy beside the confusion matrix, 1100x560 pixels (legible at 100 %)."""
    from matplotlib.figure import Figure  # only when drawing; a Figure of its own draws with Agg, pyplot untouched
    confusion, fig = r['confusion'], Figure(figsize=(11, 5.6), dpi=100, layout='constrained')
    bars, grid = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(4, 5)))
    bars.bar_label(bars.barh(CLASSES, _per_class(confusion)), fmt='%.1f %%', padding=3)
    bars.set(xlim=(0, 112), xlabel='accuracy (%)', title='Per-class accuracy')
    bars.invert_yaxis()
    grid.imshow(confusion, cmap='Blues')
    grid.set_xticks(range(10), CLASSES, rotation=40, ha='right')
    grid.set(yticks=range(10), yticklabels=CLASSES, title='Confusion matrix', xlabel='predicted', ylabel='true class')
    for i, row in enumerate(confusion):
        for j, n in enumerate(row):
            grid.text(j, i, n, ha='center', va='center', color='white' if n > max(map(max, confusion)) / 2 else 'black')
    fig.suptitle(f"{r['model']}: {r['accuracy_line']}")
    fig.savefig(f, format='png', metadata={'Software': SOFTWARE})


def write(folder, record):
    """report.png and report.md in `folder`, each whole or not at all (a full disk, Ctrl-C: the earlier as it was)."""
    real = check(folder)  # checked again: the folder may have changed during the run
    write_atomic(os.path.join(real, 'report.png'), lambda f: _png(record, f))
    write_atomic(os.path.join(real, 'report.md'), lambda f: f.write(_markdown(record).encode('utf-8')))
    print(f'Report written to {shown(os.fspath(folder))}: report.md, report.png', file=sys.stderr)
