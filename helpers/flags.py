"""The command lines of main.py, train.py and the tools: flag types, a parser
whose mistakes are one line, and the flags that override main.py's editable
globals."""
import argparse
import os

from helpers import devices, guards
from helpers.errors import UsageError
from helpers.model_table import MODELS, PRETRAINED, name_of


def _whole_number(text, least, most=2 ** 31 - 1):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f'must be at least {least}, not {value}')
    if value > most:  # counts past this would overflow the 32-bit sizes torch and the OS work in
        raise argparse.ArgumentTypeError(f'must be at most {most}, not {value}')
    return value


def positive_int(text):
    return _whole_number(text, 1)


def seed_number(text):
    """A seed torch.manual_seed takes: a whole number from -2^63 to 2^64 - 1."""
    return _whole_number(text, -2 ** 63, 2 ** 64 - 1)


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


def nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value < float('inf'):  # NaN fails this too
        raise argparse.ArgumentTypeError(f'must be 0 or a positive number, not {text}')
    return value


def fraction(text):
    """A number from 0 up to (not including) 1."""
    value = nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f'must be at least 0 and below 1, not {text}')
    return value


def device_name(text):
    """cpu, cuda, cuda:N or auto; whether this machine has it is checked by helpers.devices.pick_device."""
    try:
        devices.parse_device(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of the whole usage text
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')

    def add_model_flag(self, **kwargs):
        return self.add_argument('--model', choices=sorted(MODELS), **kwargs)

    def add_device_flag(self, default='auto'):
        return self.add_argument('--device', type=device_name, default=default, metavar='DEVICE',
                                 help=devices.DEVICE_HELP + ' (default: %(default)s)')


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
    p.add_argument('--seed', type=seed_number, metavar='N', default=defaults['seed'],
                   help='seed for shuffling, augmentation and dropout (default: none)')
    p.add_argument('--plain', action='store_true', default=defaults['plain'],
                   help="the assignment's own pipeline: PIL transforms per image, float32, no speed-ups")
    p.add_argument('--bf16', choices=['auto', 'off'], default=defaults['bf16'],
                   help='auto: bf16 autocast where the CPU (AVX512-BF16 or AMX) or GPU computes it natively; '
                        'off: float32 (default: %(default)s; --plain is always float32)')
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
             bf16=args.bf16, report=args.report)
    name = args.model or type(g['model']).__name__
    g['out'] = args.out or os.path.join('outputs', f'{name}_final.ckpt')
    if not args.eval_only:
        guards.check_output(g['out'], '--out')
    if args.report:
        guards.check_output(args.report, '--report', folder=True)
    return name

