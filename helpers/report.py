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
"""
import os
import sys

import torch

from helpers.data import CLASSES, denormalize, layout


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
    for _, name, fig in made:
        fig.tight_layout()
        fig.savefig(os.path.join(folder, name))
        plt.close(fig)
    return [(title, name) for title, name, _ in made]


FIGURES = ('loss.png', 'per_class.png', 'confusion.png', 'mistakes.png', 'confused_pair_correct.png')


def write(folder, *, model_name, checkpoint, checkpoint_sha256, device, data_dir, train_images, test_images,
          settings, step_losses, confusion, train_seconds, test_seconds, accuracy_line, gallery=None):
    os.makedirs(folder, exist_ok=True)
    for name in FIGURES:  # a reused folder keeps no figure of an earlier run that this one does not draw
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
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
    with open(os.path.join(folder, 'report.md'), 'w') as f:
        f.write('\n'.join(line for line in lines if line is not None) + '\n')
    # stderr: the accuracy line stays the last line of the run's output
    print(f'Report written to {os.path.join(folder, "report.md")}', file=sys.stderr)


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
