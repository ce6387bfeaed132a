"""main.py's command line: flags that override its editable globals, and
one-line messages instead of tracebacks for the mistakes people make."""
import argparse
import os
import sys

from models import MODELS, PRETRAINED, name_of


class UsageError(Exception):
    """A setting that cannot work here; the message says what to do."""


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, not {value}')
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a positive number, not {text}')
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the whole usage text
        self.exit(2, f'error: {message} (see python main.py --help)\n')


def parser(defaults):
    p = Parser(
        prog='main.py',
        description='Fine-tune a pretrained VGG16 or ResNet50_layer4 on CIFAR-10 for one epoch '
                    '(Adam, lr 0.001, batch 100) and print its test accuracy. '
                    "Defaults are the globals at the top of main.py.")
    p.add_argument('--model', choices=sorted(MODELS), default=name_of(defaults['model']),
                   help="which network (default: the one chosen in main.py's 'Choose model' lines)")
    p.add_argument('--checkpoint', metavar='PATH',
                   help="pretrained state dict to start from (default: main.py's PATH for that model)")
    p.add_argument('--data', metavar='DIR', default=defaults['data_dir'],
                   help="torchvision's CIFAR-10 root (downloaded there if missing) or an image folder "
                        "DIR/train/<class>/, DIR/test/<class>/ (default: %(default)s)")
    p.add_argument('--epochs', type=positive_int, metavar='N', default=defaults['num_epochs'],
                   help='fine-tuning epochs (default: %(default)s)')
    p.add_argument('--lr', type=positive_float, metavar='LR', default=defaults['learning_rate'],
                   help="Adam's learning rate (default: %(default)s)")
    p.add_argument('--batch-size', type=positive_int, metavar='N', default=defaults['batch_size'],
                   help='images per step (default: %(default)s)')
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default=defaults['device'],
                   help='auto: cuda:0 if available, else cpu (default: %(default)s)')
    p.add_argument('--eval-only', action='store_true', default=defaults['eval_only'],
                   help='skip fine-tuning: only test the checkpoint')
    p.add_argument('--out', metavar='PATH', default=defaults['out'],
                   help='where the fine-tuned checkpoint goes (default: outputs/<model>_final.ckpt)')
    p.add_argument('--seed', type=int, metavar='N', default=defaults['seed'],
                   help='seed for shuffling, augmentation and dropout (default: none)')
    p.add_argument('--plain', action='store_true', default=defaults['plain'],
                   help="the assignment's own pipeline: PIL transforms per image, float32, no speed-ups")
    p.add_argument('--report', metavar='DIR', default=defaults['report'],
                   help='write report.md with a loss curve, per-class accuracy and confusion matrix')
    return p


def apply_overrides(g, argv=None):
    """Set main.py's globals `g` from the command line; --model swaps model and PATH."""
    args = parser(g).parse_args(argv)
    if args.model != name_of(g['model']):
        g['model'] = MODELS[args.model]()
        g['PATH'] = PRETRAINED[args.model]
    if args.checkpoint is not None:
        g['PATH'] = args.checkpoint
    if args.model == 'vgg16' and args.batch_size == 1 and not args.eval_only:
        raise UsageError("--batch-size 1 cannot train VGG16: its BatchNorm1d needs 2 or more images a batch")
    g.update(data_dir=args.data, num_epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
             device=args.device, eval_only=args.eval_only, seed=args.seed, plain=args.plain,
             report=args.report, out=args.out or os.path.join('outputs', f'{args.model}_final.ckpt'))
    return args.model


def _friendly(kind, value, tb):
    from checkpoint_io import CheckpointError
    from cifar10 import DataError
    sys.stdout.flush()
    if issubclass(kind, KeyboardInterrupt):
        print('\ninterrupted: stopped before the end, nothing new was saved '
              '(files from earlier runs are as they were)', file=sys.stderr)
        os._exit(130)
    if issubclass(kind, (CheckpointError, DataError, UsageError)):
        print(f'error: {value}', file=sys.stderr)
        os._exit(1)
    sys.__excepthook__(kind, value, tb)


def install_friendly_errors():
    """Known mistakes and Ctrl-C end in one line, not a traceback (exit 1, or 130 for Ctrl-C)."""
    sys.excepthook = _friendly
