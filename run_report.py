"""`main.py --report DIR`: a report of the run a student can paste.

DIR/report.md holds the settings, timings, the accuracy line exactly as
printed, per-class accuracy and the confusion matrix; the PNG figures beside it
show the training loss (when the run fine-tuned), per-class accuracy and the
confusion matrix. Drawing needs matplotlib; without it the report is written
without figures. Nothing here changes the run or what it printed.
"""
import os
import sys

import torch

from checkpoint_io import sha256
from cifar10 import CLASSES, layout


def _figures(folder, step_losses, per_class, confusion):
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print('note: matplotlib is not installed, so the report has no figures; '
              'pip install matplotlib to get them', file=sys.stderr)
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
    for _, name, fig in made:
        fig.tight_layout()
        fig.savefig(os.path.join(folder, name))
        plt.close(fig)
    return [(title, name) for title, name, _ in made]


def write(folder, *, model_name, checkpoint, device, data_dir, train_images, test_images, settings,
          step_losses, confusion, train_seconds, test_seconds, accuracy_line):
    os.makedirs(folder, exist_ok=True)
    per_class = [100 * row[i] / max(sum(row), 1) for i, row in enumerate(confusion)]
    figures = _figures(folder, step_losses, per_class, confusion)
    fine_tuned = settings['epochs'] > 0
    lines = [
        f'# CIFAR-10 run: {model_name}', '',
        '| | |', '| --- | --- |',
        f'| model | {model_name} |',
        f'| checkpoint | `{checkpoint}` |',
        f'| checkpoint sha256 | `{sha256(checkpoint)}` |',
        f'| device | {device} |',
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
    for title, name in figures:
        lines += ['', f'## {title}', '', f'![{title}]({name})']
    with open(os.path.join(folder, 'report.md'), 'w') as f:
        f.write('\n'.join(line for line in lines if line is not None) + '\n')
    # stderr: the accuracy line stays the last line of the run's output
    print(f'Report written to {os.path.join(folder, "report.md")}', file=sys.stderr)
