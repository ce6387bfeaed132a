"""The command lines of main.py and train.py: flags that override main.py's
editable globals, and one-line messages instead of tracebacks for the
mistakes people make."""
import argparse
import math
import os
import sys
import tempfile

from helpers.model_table import MODELS, PRETRAINED, name_of


class UsageError(Exception):
    """A setting that cannot work here; the message says what to do."""


def _whole_number(text, least):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f'must be at least {least}, not {value}')
    return value


def positive_int(text):
    return _whole_number(text, 1)


def nonnegative_int(text):
    return _whole_number(text, 0)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a positive number, not {text}')
    return value


def device_name(text):
    """cpu, cuda, cuda:N or auto; whether this machine has it is checked by helpers.devices.pick_device."""
    import torch
    if text.strip().lower() != 'auto':
        try:
            kind = torch.device(text.strip().lower()).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ('cpu', 'cuda'):
            raise argparse.ArgumentTypeError(f"'{text}' is not a device here: use auto, cpu, cuda or cuda:N")
    return text


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the whole usage text
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')

    def add_model_flag(self, **kwargs):
        return self.add_argument('--model', choices=sorted(MODELS), **kwargs)

    def add_device_flag(self, default='auto'):
        return self.add_argument('--device', type=device_name, default=default, metavar='DEVICE',
                                 help='auto (cuda:0 if there is a GPU, else cpu), cpu, cuda or cuda:N '
                                      '(default: %(default)s)')


def parser(defaults):
    p = Parser(
        prog='python main.py',
        description='Fine-tune a pretrained VGG16 or ResNet50_layer4 on CIFAR-10 for one epoch '
                    '(Adam, lr 0.001, batch 100) and print its test accuracy. '
                    "Defaults are the globals at the top of main.py.")
    p.add_model_flag(default=name_of(defaults['model']),
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
    p.add_device_flag(default=defaults['device'])
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
    """Set main.py's globals `g` from the command line; --model swaps model and PATH.

    Returns the model's name: 'resnet50', 'vgg16', or a student's own network's class name."""
    args = parser(g).parse_args(argv)
    if args.model is not None and args.model != name_of(g['model']):
        g['model'] = MODELS[args.model]()
        g['PATH'] = PRETRAINED[args.model]
    if args.checkpoint is not None:
        g['PATH'] = args.checkpoint
    if args.batch_size == 1 and not args.eval_only and name_of(g['model']) == 'vgg16':
        raise UsageError("--batch-size 1 cannot train VGG16: its BatchNorm1d needs 2 or more images a batch")
    g.update(data_dir=args.data, num_epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
             device=args.device, eval_only=args.eval_only, seed=args.seed, plain=args.plain,
             report=args.report)
    name = args.model or type(g['model']).__name__
    g['out'] = args.out or os.path.join('outputs', f'{name}_final.ckpt')
    if not args.eval_only:
        check_output(g['out'], '--out')
    if args.report:
        check_output(args.report, '--report', folder=True)
    return name


def check_output(path, flag, folder=False):
    """Stop with one line, before any work, when `path` (a checkpoint file, or with `folder` a folder)
    cannot be written: otherwise the mistake shows only after the epochs whose result it was to keep."""
    from helpers.checkpoints import refuse_shipped
    path = os.fspath(path)
    if not folder:
        if os.path.isdir(path) or path.endswith(('/', os.sep)):
            raise UsageError(f"{flag} {path} names a folder; give a file name in it, "
                             f"e.g. {flag} {os.path.join(path, 'model.ckpt')}")
        refuse_shipped(path)
    elif os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a folder (it is made when missing)")
    place = os.path.abspath(path if folder else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(place):  # the folders still to be made go where the nearest existing one is
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        raise UsageError(f"{flag} {path}: {place} is a file, not a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write in {place} ({e.strerror or e}); choose another {flag}") from None


def check_batch_size(model, batch_size):
    """Stop with one line when fine-tuning `model` in batches of `batch_size` would overflow its BatchNorm."""
    from helpers.weight_scaling import largest_safe_batch
    limit = largest_safe_batch(model)
    if limit is not None and limit < 1:  # saved after a fine-tune that overflowed, or damaged
        raise UsageError("this checkpoint cannot be fine-tuned at any batch size: a BatchNorm's running variance is "
                         "at the edge of float32 (or past it), so training statistics would overflow; use --eval-only, "
                         "or fine-tune the shipped checkpoint")
    if limit is not None and batch_size > limit:
        raise UsageError(f"--batch-size {batch_size} is too large for this checkpoint: its weights are scaled up "
                         f"to survive the Adam epoch (see the README), and BatchNorm's statistics over more than "
                         f"{limit} images would overflow float32; use --batch-size {limit} or less")


def own_network(model):
    """True for a network of the student's own in the "Choose model" lines (not VGG16 or ResNet50_layer4)."""
    return name_of(model) is None


DIVERGED = 10 * math.log(10)  # ten times the loss of guessing uniformly among ten classes


def stop_if_diverged(step_losses, lr):
    """Stop with one line, before anything is saved, once the fine-tune has diverged: the
    mean loss of the last 100 steps is not a number, or above ten times that of guessing.

    Called where the loss is printed anyway, so the GPU is not made to wait every step."""
    import torch
    recent = torch.stack(step_losses[-100:]).float().mean()
    if torch.isfinite(recent) and recent <= DIVERGED:
        return
    losses = torch.stack(step_losses).float()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        what = f'the loss became {losses[bad[0]].item()} at step {int(bad[0]) + 1}'
    else:
        what = (f'the loss averaged {recent.item():.4g} over steps {max(len(losses) - 99, 1)}-{len(losses)} '
                f'(guessing gives {math.log(10):.2f})')
    raise UsageError(f'the fine-tune diverged: {what}, with learning rate {lr:g}; the model was not saved; '
                     'use a smaller --lr (the assignment uses 0.001)')


def _friendly(kind, value, tb):
    from helpers.checkpoints import SAVED, CheckpointError
    from helpers.data import DataError
    sys.stdout.flush()
    if issubclass(kind, KeyboardInterrupt):
        saved = f"saved before that: {', '.join(SAVED)}" if SAVED else 'nothing new was saved'
        print(f'\ninterrupted: stopped before the end; {saved} '
              '(no file is left half-written; other files are as they were)', file=sys.stderr)
        os._exit(130)
    if issubclass(kind, (CheckpointError, DataError, UsageError)):
        print(f'error: {value}', file=sys.stderr)
        os._exit(1)
    sys.__excepthook__(kind, value, tb)


def install_friendly_errors():
    """Known mistakes and Ctrl-C end in one line, not a traceback (exit 1, or 130 for Ctrl-C)."""
    sys.excepthook = _friendly
