"""`main.py --report DIR`: a report of the run a student can paste, and the
training curves of train.py's runs.

DIR/report.md holds the settings, timings, the accuracy line exactly as
printed, per-class accuracy, the confusion matrix and the most-confused pairs
of classes; the PNG figures beside it show the training loss (when the run
fine-tuned), per-class accuracy, the confusion matrix, the test images the
model got most confidently wrong and the correct ones of the most-confused
pair. The images are kept while testing (`Gallery`), so the report costs no
extra pass over the data. Drawing needs matplotlib; without it the report is
written without figures. Nothing here changes the run or what it printed.

A report loses nobody's files: it goes only into a folder that is new, empty,
or holds an earlier report exactly as this module wrote it (listed with its
sha256 sums in MANIFEST), never into the project's own folders; it is built in
a temporary folder beside DIR and renamed into place, so DIR holds the whole
old report or the whole new one, also after a full disk or Ctrl-C.
"""
import errno
import os
import shutil
import sys
import tempfile

import torch

from helpers.checkpoints import PROJECT, sha256
from helpers.data import CLASSES, denormalize, layout
from helpers.errors import UsageError
from helpers.paths import expand, first_missing_folder, inside, nearest_existing


def _pyplot():
    """matplotlib's pyplot drawing to files, or None (with a note) when it is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print('note: matplotlib is not installed, so there are no figures; '
              'pip install matplotlib to get them', file=sys.stderr)
        return None
    return plt


class Gallery:
    """The few test images the report shows, picked while the test pass goes by:
    the `size` most confident mistakes, and for each class its `per_class`
    most confident correct predictions (to show the most-confused pair, known
    only at the end)."""

    def __init__(self, size=32, per_class=8):
        self.size, self.per_class = size, per_class
        self.mistakes = []                      # (confidence, pixels, true, predicted)
        self.correct = {c: [] for c in range(len(CLASSES))}

    @staticmethod
    def _top(entries, k):
        return sorted(entries, key=lambda e: -e[0])[:k]

    def add(self, images, labels, outputs):
        confidence, predicted = outputs.float().softmax(1).max(1)
        self.mistakes = self._top(self.mistakes + self._rows(images, labels, confidence, predicted,
                                                             predicted != labels, self.size), self.size)
        for row in self._rows(images, labels, confidence, predicted, predicted == labels,
                              self.per_class * len(CLASSES)):
            self.correct[row[2]] = self._top(self.correct[row[2]] + [row], self.per_class)

    @staticmethod
    def _rows(images, labels, confidence, predicted, wanted, most):
        """(confidence, pixels, true, predicted) of the `most` most confident images where `wanted`."""
        index = wanted.nonzero().flatten()
        index = index[confidence[index].argsort(descending=True)[:most]]
        if len(index) == 0:
            return []
        return list(zip(confidence[index].tolist(), denormalize(images[index]).cpu(),
                        labels[index].tolist(), predicted[index].tolist()))


def confused_pairs(confusion, top=3):
    """The `top` pairs of classes most often taken for each other: [(a, b, a called b, b called a)]."""
    pairs = [(confusion[a][b] + confusion[b][a], a, b) for a in range(len(confusion)) for b in range(a + 1, len(confusion))]
    pairs.sort(reverse=True)
    return [(a, b, confusion[a][b], confusion[b][a]) for n, a, b in pairs[:top] if n > 0]


def _tiles(plt, rows, title, columns=8):
    """A figure of image tiles, upscaled without smoothing, each captioned."""
    n = max(len(rows), 1)
    height = (n + columns - 1) // columns
    fig, axes = plt.subplots(height, columns, figsize=(1.6 * columns, 1.9 * height + 0.5), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, (pixels, caption) in zip(axes.flat, rows):
        ax.imshow(pixels.permute(1, 2, 0).numpy(), interpolation='nearest')
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return fig


def _gallery_figures(plt, gallery, confusion):
    made = []
    if gallery.mistakes:
        rows = [(px, f'true {CLASSES[t]}\ncalled {CLASSES[p]} {100 * c:.0f}%') for c, px, t, p in gallery.mistakes]
        made.append(('Most confident mistakes', 'mistakes.png',
                     _tiles(plt, rows, 'Test images the model got wrong, most confident first')))
    pairs = confused_pairs(confusion, top=1)
    if pairs:
        a, b = pairs[0][:2]
        rows = [(px, f'{CLASSES[t]} {100 * c:.0f}%') for cls in (a, b) for c, px, t, p in gallery.correct[cls]]
        if rows:
            made.append((f'Correct {CLASSES[a]} and {CLASSES[b]} images', 'confused_pair_correct.png',
                         _tiles(plt, rows, f'The most-confused pair, {CLASSES[a]} and {CLASSES[b]}: '
                                           'correct predictions, most confident first')))
    return made


def _figures(folder, step_losses, per_class, confusion, gallery=None):
    plt = _pyplot()
    if plt is None:
        return []
    made = []
    if step_losses:
        losses = torch.tensor(step_losses)
        running = losses.cumsum(0) / torch.arange(1, len(losses) + 1)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.plot(range(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label='loss per step')
        ax.plot(range(1, len(losses) + 1), running, lw=2, label='running mean (as printed)')
        ax.set(xlabel='step', ylabel='cross-entropy loss', title='Fine-tuning loss')
        ax.legend()
        made.append(('Training loss', 'loss.png', fig))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    bars = ax.bar(CLASSES, per_class, color='tab:blue')
    ax.bar_label(bars, fmt='%.1f', fontsize=8)
    ax.set(ylabel='accuracy (%)', ylim=(0, 105), title='Test accuracy per class')
    ax.tick_params(axis='x', rotation=45)
    made.append(('Per-class accuracy', 'per_class.png', fig))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.imshow(confusion, cmap='Blues')
    top = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, n in enumerate(row):
            ax.text(j, i, n, ha='center', va='center', fontsize=8, color='white' if n > top / 2 else 'black')
    ax.set_xticks(range(10), CLASSES, rotation=45, ha='right')
    ax.set_yticks(range(10), CLASSES)
    ax.set(xlabel='predicted class', ylabel='true class', title='Confusion matrix (test images)')
    made.append(('Confusion matrix', 'confusion.png', fig))
    if gallery is not None:
        made += _gallery_figures(plt, gallery, confusion)
    try:
        for _, name, fig in made:
            fig.tight_layout()
            fig.savefig(os.path.join(folder, name))
    finally:  # also after a full disk: pyplot keeps every figure until it is closed
        for _, _, fig in made:
            plt.close(fig)
    return [(title, name) for title, name, _ in made]


FIGURES = ('loss.png', 'per_class.png', 'confusion.png', 'mistakes.png', 'confused_pair_correct.png')
MANIFEST = '.report.sha256'  # the report's files and their sha256 sums: how an earlier report is known
LITTER = ('.DS_Store', 'Thumbs.db', 'desktop.ini')  # what file browsers leave in a folder they showed
# the project's own folders, tracked or filled by it: a report there would mix with (or replace) its files
PROJECT_FOLDERS = ('.ci', '.git', 'checkpoints', 'data', 'docs', 'helpers', 'tests', 'tools')
CHOOSE = 'choose a new or empty folder, e.g. --report reports/run1'
FULL = (errno.ENOSPC, getattr(errno, 'EDQUOT', errno.ENOSPC))  # a full disk, or a full quota


def _manifest(real):
    """{name: sha256} listed in `real`'s MANIFEST, or None when there is none or it is not one we wrote."""
    try:
        with open(os.path.join(real, MANIFEST), encoding='utf-8') as f:
            rows = [line.rstrip('\n').split('  ', 1) for line in f]
    except (OSError, UnicodeDecodeError):
        return None
    listed = {row[1]: row[0] for row in rows if len(row) == 2}  # the lines are `sha256  name`, as sha256sum's
    # the sums are checked by the caller; here only that it names the report's files, report.md among them
    if len(listed) != len(rows) or 'report.md' not in listed or not set(listed) <= {'report.md', *FIGURES}:
        return None
    return listed


def _check_earlier(folder, real):
    """Stop unless the existing folder `real` is empty or holds an earlier report as it was written."""
    try:
        names = sorted(set(os.listdir(real)) - set(LITTER))
    except OSError as e:
        raise UsageError(f'--report {folder}: cannot read it ({e.strerror or e}); {CHOOSE}') from None
    if not names:
        return
    listed = _manifest(real)
    if listed is None:
        raise UsageError(f"--report {folder} already holds files that are not a report of this main.py "
                         f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}; a report of an older version "
                         f"has no {MANIFEST} and is not replaced either); {CHOOSE}")
    others = [n for n in names if n not in listed and n != MANIFEST]
    if others:
        raise UsageError(f"--report {folder} holds an earlier report and other files too "
                         f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); move them out or {CHOOSE}")
    for name, digest in listed.items():  # a file edited since would be lost with the earlier report
        path = os.path.join(real, name)
        if os.path.lexists(path) and (not os.path.isfile(path) or sha256(path) != digest):
            raise UsageError(f'--report {folder}: its {name} was changed after the report was written; '
                             f'move it out or {CHOOSE}')


def check_destination(folder, others=()):
    """Stop with one line, before any work, unless the report can go into `folder` without losing a file:
    `folder` is new, empty, or holds an earlier report as written, and is none of the project's own folders
    (also through links, `..` or another letter case); `others` are files this run also writes (its
    --out checkpoint), which must not land in it. Returns `folder`'s real path."""
    folder = expand(os.fspath(folder))
    real = os.path.realpath(folder)
    if inside(PROJECT, real):
        raise UsageError(f'--report {folder} is the project folder, or holds it; {CHOOSE}')
    for name in PROJECT_FOLDERS:
        if inside(real, os.path.join(PROJECT, name)):
            raise UsageError(f"--report {folder} is in the project's {name}/ folder, which holds the project's "
                             f"own files; {CHOOSE}")
    for other in others:
        if inside(expand(os.fspath(other)), real):
            raise UsageError(f'--report {folder} would also hold {other}, which this run saves; {CHOOSE}, '
                             'or another --out')
    if os.path.lexists(real) and not os.path.isdir(real):
        raise UsageError(f'--report {folder} is a file; {CHOOSE}')
    if os.path.isdir(real):
        _check_earlier(folder, real)
    # the report is built in a temporary folder beside `folder`, then renamed: the folder above must take one
    place = nearest_existing(os.path.dirname(real))
    try:
        if place is None:
            raise FileNotFoundError(errno.ENOENT, 'its drive is not there')
        os.rmdir(tempfile.mkdtemp(prefix='.report.', dir=place))
    except OSError as e:
        raise UsageError(f'--report {folder}: cannot write in {place or real} ({e.strerror or e}); '
                         f'{CHOOSE}') from None
    return real


def write(folder, **fields):
    """Write the report into `folder` whole or not at all; `fields` are _fill's. Any earlier report there
    is replaced only once the new one is complete; a full disk or Ctrl-C leaves it (or nothing) as it was."""
    real = check_destination(folder)  # again: the run may have changed the folder since the first check
    folder = expand(os.fspath(folder))
    parent = os.path.dirname(real)
    made = first_missing_folder(parent)  # folders made for the report, removed again if it is not written
    had = os.path.isdir(real)
    work = None
    try:
        os.makedirs(parent, exist_ok=True)
        # beside `folder`, so that the swap is a rename on one file system
        work = tempfile.mkdtemp(prefix=f'.{os.path.basename(real)}.', suffix='.tmp', dir=parent)
        new = os.path.join(work, 'new')
        os.mkdir(new)  # with the usual permissions: it becomes `folder`
        names = _fill(new, **fields)
        with open(os.path.join(new, MANIFEST), 'w', encoding='utf-8') as f:
            f.writelines(f'{sha256(os.path.join(new, n))}  {n}\n' for n in names)
        if had:  # the earlier report (or the empty folder) steps aside, whole, and comes back on any failure
            os.rename(real, os.path.join(work, 'old'))
        os.rename(new, real)
    except OSError as e:
        was = 'its earlier report is as it was' if had else 'nothing was written'
        space = 'free some space or ' if e.errno in FULL else ''
        raise UsageError(f'cannot write the report in {folder} ({e.strerror or e}); {was}; '
                         f'{space}choose another --report') from None
    finally:
        _clean_up(folder, real, work, made)
    # stderr: the accuracy line stays the last line of the run's output
    print(f'Report written to {os.path.join(folder, "report.md")}', file=sys.stderr)


def _clean_up(folder, real, work, made):
    """After `write`, failed or not: the earlier report back in place if it stepped aside and the new one did
    not take its name, then no temporary folder, nor a folder made only for a report that was not written."""
    if work is not None:
        old = os.path.join(work, 'old')
        if os.path.isdir(old) and not os.path.lexists(real):
            try:
                os.rename(old, real)
            except OSError as e:  # keep it where it is rather than lose it
                raise UsageError(f'cannot put the earlier report back in {folder} ({e.strerror or e}); '
                                 f'it is whole in {old}: move it back') from None
        shutil.rmtree(work, ignore_errors=True)
    if made is not None and not os.path.lexists(real):
        place = os.path.dirname(real)
        while inside(place, made):
            try:
                os.rmdir(place)  # only when empty: never anything else's
            except OSError:
                break
            place = os.path.dirname(place)


def _fill(folder, *, model_name, checkpoint, checkpoint_sha256, device, data_dir, train_images, test_images,
          settings, step_losses, confusion, train_seconds, test_seconds, accuracy_line, gallery=None):
    """Draw the figures and write report.md into the new folder `folder`; the names of the files written."""
    per_class = [100 * row[i] / max(sum(row), 1) for i, row in enumerate(confusion)]
    figures = _figures(folder, step_losses, per_class, confusion, gallery)
    fine_tuned = settings['epochs'] > 0
    lines = [
        f'# CIFAR-10 run: {model_name}', '',
        '| | |', '| --- | --- |',
        f'| model | {model_name} |',
        f'| checkpoint | `{checkpoint}` |' if checkpoint else '| checkpoint | none: random weights |',
        f'| checkpoint sha256 | `{checkpoint_sha256}` |' if checkpoint else None,
        f"| device | {device}, {settings['precision']} |",
        f'| data | `{data_dir}` ({layout(data_dir) or "torchvision"} layout): {train_images} training, '
        f'{test_images} test images |',
        f"| fine-tuning | {settings['epochs']} epoch(s), Adam, lr {settings['learning_rate']}, "
        f"batch {settings['batch_size']}, seed {settings['seed']}"
        f"{', plain pipeline' if settings['plain'] else ''} |" if fine_tuned else '| fine-tuning | none (--eval-only) |',
        f'| fine-tuning time | {train_seconds:.1f} s |' if fine_tuned else None,
        f'| test time | {test_seconds:.1f} s |',
        '', '```', accuracy_line, '```', '',
        '## Per-class accuracy', '', '| class | correct | images | accuracy |', '| --- | ---: | ---: | ---: |',
    ]
    for i, (c, row) in enumerate(zip(CLASSES, confusion)):
        lines.append(f'| {c} | {row[i]} | {sum(row)} | {per_class[i]:.1f} % |')
    lines += ['', '## Confusion matrix', '', 'Rows are the true class, columns the predicted one.', '',
              '| | ' + ' | '.join(CLASSES) + ' |', '| --- |' + ' ---: |' * 10]
    for c, row in zip(CLASSES, confusion):
        lines.append(f'| **{c}** | ' + ' | '.join(str(n) for n in row) + ' |')
    pairs = confused_pairs(confusion)
    if pairs:
        lines += ['', '## Most-confused pairs', '']
        for a, b, ab, ba in pairs:
            lines.append(f'- **{CLASSES[a]} and {CLASSES[b]}**: {ab} {CLASSES[a]} image(s) were called '
                         f'{CLASSES[b]} and {ba} {CLASSES[b]} image(s) {CLASSES[a]}.')
    for title, name in figures:
        lines += ['', f'## {title}', '', f'![{title}]({name})']
    # UTF-8 whatever the locale (Windows' may be cp949 or cp1252): paths and names may hold any letter
    with open(os.path.join(folder, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(line for line in lines if line is not None) + '\n')
    return [name for _, name in figures] + ['report.md']


def plot_training(history, path, title):
    """Loss and validation accuracy per epoch, and the learning rate, from train.py's per-epoch log."""
    plt = _pyplot()
    if plt is None:
        return False
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=70)
    axes[0].plot(epochs, [h['train_loss'] for h in history], marker='.')
    axes[0].set(xlabel='epoch', ylabel='training loss', title='Training loss')
    axes[1].plot(epochs, [h['val_accuracy'] for h in history], marker='.', color='tab:green')
    axes[1].set(xlabel='epoch', ylabel='accuracy (%)', title=f"Validation accuracy (last {history[-1]['val_accuracy']:.2f} %)")
    axes[2].plot(epochs, [h['lr'] for h in history], marker='.', color='tab:orange')
    axes[2].set(xlabel='epoch', ylabel='learning rate', title='Learning rate (at each epoch\'s start)')
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
