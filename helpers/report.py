"""`main.py --report DIR`: report.md and figures to paste, losing nobody's file: only into a new or empty folder or
an earlier report's, each file written beside its place, renamed over it once all are whole."""
import contextlib
import errno
import hashlib
import itertools
import os
import sys

from helpers.data import CLASSES
from helpers.errors import Mistake
from helpers.paths import check_place, inside, shown

HEADER = '# CIFAR-10 run report (python main.py --report)'  # how an earlier report is known
FIGURES = ('loss.png', 'per_class.png', 'confusion.png')
OLDER = ('mistakes.png', 'confused_pair_correct.png')  # an earlier version's report drew these too
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
    others, body = [n for n in names if n not in {'report.md', *FIGURES, *OLDER}], text[:text.rfind('<!--')]
    if others:
        refuse(f"holds files that are not a report's ({', '.join(others[:3])}{', ...' * (len(others) > 3)})")
    if names and not (body.startswith(HEADER) and text == body + _stamp(body)):
        refuse('holds a report.md that main.py did not write, or that was changed since (move it out)')
    check_place(real, '--report')  # also: a file is not a folder
    return real


def confused_pairs(confusion, top=3):
    """The `top` pairs of classes most often taken for each other: [(a, b, a called b, b called a)]."""
    pairs = sorted(((confusion[a][b] + confusion[b][a], a, b) for a, b in itertools.combinations(range(10), 2)))
    return [(a, b, confusion[a][b], confusion[b][a]) for n, a, b in pairs[::-1][:top] if n > 0]


def _figure_class():
    with contextlib.suppress(ImportError):
        from matplotlib.figure import Figure
        return Figure
    print('note: matplotlib is not installed, so the report has no figures; pip install matplotlib', file=sys.stderr)


def _figures(Figure, r, per_class):
    """[(section, file name, figure)] of the report of the run `r`."""
    made, losses, confusion = [], r['step_losses'], r['confusion']
    def axes(section, name, size=(7, 4), **settings):
        made.append((section, name, Figure(figsize=size, dpi=100, layout='tight')))
        return made[-1][2].add_subplot(title=section, **settings)
    if losses:
        ax = axes('Fine-tuning loss', 'loss.png', xlabel='step', ylabel='cross-entropy loss')
        ax.plot(steps := range(1, len(losses) + 1), losses, lw=0.6, alpha=0.5)
        ax.plot(steps, [s / n for n, s in zip(steps, itertools.accumulate(losses))], lw=2)
        ax.legend(['loss per step', 'running mean (as printed)'])
    ax = axes('Test accuracy per class', 'per_class.png', ylabel='accuracy (%)', ylim=(0, 105))
    ax.bar_label(ax.bar(CLASSES, per_class), fmt='%.1f', fontsize=8)
    ax.tick_params(axis='x', rotation=45)
    ax = axes('Confusion matrix (test images)', 'confusion.png', (7, 6), xlabel='predicted class', ylabel='true class',
              yticks=range(10), yticklabels=CLASSES)
    ax.set_xticks(range(10), CLASSES, rotation=45, ha='right')
    ax.imshow(confusion, cmap='Blues')
    for (i, row), j in itertools.product(enumerate(confusion), range(10)):
        ax.text(j, i, row[j], ha='center', va='center', fontsize=8, color='wk'[2 * row[j] <= max(map(max, confusion))])
    return made


def _markdown(r, per_class, figures):
    def row(*cells):
        return '| ' + ' | '.join(map(str, cells)) + ' |'
    tuned, confusion, pairs = r['epochs'] > 0, r['confusion'], confused_pairs(r['confusion'])
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
             row('', *CLASSES), '| --- |' + ' ---: |' * 10, *(row(f'**{c}**', *n) for c, n in zip(CLASSES, confusion)),
             *['', '## Most-confused pairs', ''] * bool(pairs),
             *(f'- **{CLASSES[a]} and {CLASSES[b]}**: {ab} {CLASSES[a]} image(s) were called {CLASSES[b]} and {ba} '
               f'{CLASSES[b]} image(s) {CLASSES[a]}.' for a, b, ab, ba in pairs),
             *(line for section, name, _ in figures for line in ('', f'## {section}', '', f'![{section}]({name})'))]
    text = '\n'.join(line for line in lines if line is not None) + '\n'
    return text + _stamp(text)


def write(folder, record):
    """The figures and report.md in `folder`: all new, or (full disk, Ctrl-C) the earlier files as they were."""
    real, staged = check(folder), {}  # checked again: the folder may have changed during the run
    per_class = [100 * row[i] / max(sum(row), 1) for i, row in enumerate(record['confusion'])]
    try:
        os.makedirs(real, exist_ok=True)
        figures = _figures(Figure, record, per_class) if (Figure := _figure_class()) else []
        text = _markdown(record, per_class, figures).encode('utf-8')  # UTF-8 whatever the locale
        for name, data in [*((name, fig) for _, name, fig in figures), ('report.md', text)]:
            staged[name] = os.path.join(real, f'.{name}.{os.getpid()}.tmp')  # made with the usual permissions
            with open(staged[name], 'wb') as f:
                f.write(data) if name == 'report.md' else data.savefig(f, format='png')
        for name, tmp in staged.items():  # all whole: each renamed over its place, report.md last
            os.replace(tmp, os.path.join(real, name))
        for name in {*FIGURES, *OLDER}.intersection(os.listdir(real)) - set(staged):  # an earlier run's only
            os.remove(os.path.join(real, name))
    except OSError as e:
        space = 'free some space or ' if e.errno in (errno.ENOSPC, getattr(errno, 'EDQUOT', 0)) else ''
        raise Mistake(f"cannot write the report in {shown(folder)} ({e.strerror or e}); an earlier report's files "
                      f'are as they were; {space}choose another --report') from None
    finally:
        for tmp in filter(os.path.lexists, staged.values()):
            os.remove(tmp)
    print(f"Report written to {os.path.join(os.fspath(folder), 'report.md')}", file=sys.stderr)

