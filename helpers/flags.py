"""The command lines of main.py, train.py and the tools: flag types, a parser
whose mistakes are one line, and the flags that override main.py's editable
globals, which get the same checks as the flags."""
import argparse
import os
import sys

from helpers import devices, guards, paths
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

    def given(self, argv, args):
        """The names of the flags `argv` gives (`args`: what it parsed to), not their defaults."""
        not_given = object()
        # parsing into a namespace that already holds a value keeps that value where no flag sets it
        marked = self.parse_args(argv, namespace=argparse.Namespace(**{k: not_given for k in vars(args)}))
        return {k for k, v in vars(marked).items() if v is not not_given}

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


# main.py's settings, by the flag that overrides each
SETTINGS = {'data': 'data_dir', 'epochs': 'num_epochs', 'lr': 'learning_rate', 'batch_size': 'batch_size',
            'device': 'device', 'eval_only': 'eval_only', 'out': 'out', 'seed': 'seed', 'plain': 'plain',
            'bf16': 'bf16', 'report': 'report'}
PATH_SETTINGS = ('data', 'out', 'report')
def _check_settings(p, args, given):
    """A UsageError for a setting edited at the top of main.py that its flag would refuse: argparse checks
    a default only when it is text (batch_size = 0, num_epochs = 0, bf16 = True, report = True...)."""
    for action in p._actions:
        if action.dest not in SETTINGS or action.dest in given:
            continue
        value, name = getattr(args, action.dest), SETTINGS[action.dest]
        where = f'{name} = {value!r} at the top of main.py'
        if action.dest in PATH_SETTINGS:
            if (value is None and action.dest == 'data') or (value is not None and not isinstance(
                    value, (str, os.PathLike))) or value == '':
                raise UsageError(f"{where}: give a path in quotes, e.g. {name} = 'outputs/run1'"
                                 + (", or None" if action.dest != 'data' else ''))
        elif action.const is True:  # store_true: eval_only, plain
            if not isinstance(value, bool):
                raise UsageError(f'{where}: use True or False')
        elif action.choices is not None:
            if value not in action.choices:
                raise UsageError(f"{where}: use {' or '.join(repr(c) for c in action.choices)}")
        elif action.dest == 'device' and not isinstance(value, str):  # the course's torch.device(...) line
            if type(value).__name__ != 'device':
                raise UsageError(f"{where}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
            args.device = str(value)
        elif value is not None and action.type is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise UsageError(f'{where}: use a number')
            try:
                setattr(args, action.dest, action.type(str(value)))
            except argparse.ArgumentTypeError as e:
                raise UsageError(f'{where}: {e}') from None


def _command_line(g, argv):
    """The arguments to read: the command line's, or none where main.py's code runs in a notebook kernel
    (pasted in a cell or exec'd, which has no __file__; or run in an IDE's interactive window), whose
    sys.argv is the kernel's own (-f kernel.json). `%run main.py --model vgg16` sets sys.argv as a shell does."""
    if argv is not None:
        return argv
    launcher = os.path.basename(sys.argv[0]) if sys.argv else ''
    if '__file__' not in g or 'kernel' in launcher:  # ipykernel_launcher.py, colab_kernel_launcher.py
        return []
    return sys.argv[1:]


def apply_overrides(g, argv=None):
    """Set main.py's globals `g` from the command line; --model swaps model and PATH.

    Returns the model's name: 'resnet50', 'vgg16', or a student's own network's class name."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        raise UsageError('main.py runs as one process (under torchrun every process would fine-tune and save to '
                         'one --out): run python main.py; torchrun is for train.py')
    argv = _command_line(g, argv)
    p = parser(g)
    args = p.parse_args(argv)
    given = p.given(argv, args)
    _check_settings(p, args, given)
    for flag in ('out', 'report'):
        if getattr(args, flag) == '':
            raise UsageError(f"--{flag} '' is empty: give a {'file' if flag == 'out' else 'folder'} name, or leave "
                             f"--{flag} out")
    if args.checkpoint is None and g['PATH'] is not None and not isinstance(g['PATH'], (str, os.PathLike)):
        raise UsageError(f"PATH = {g['PATH']!r} at the top of main.py: give the checkpoint's path in quotes, "
                         "e.g. PATH = './checkpoints/resnet50_cifar10.ckpt', or None for random weights")
    if args.eval_only:
        unused = [f'--{k.replace("_", "-")}' for k in ('epochs', 'lr', 'out') if k in given]
        if unused:
            raise UsageError(f"{' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} nothing with "
                             "--eval-only, which only tests the checkpoint: leave out one or the other")
    args.data, args.out, args.report, args.checkpoint = map(paths.expand, (args.data, args.out, args.report,
                                                                        args.checkpoint))
    if args.model is not None and args.model != name_of(g['model']):
        g['model'] = MODELS[args.model]()
        g['PATH'] = PRETRAINED[args.model]
    if args.checkpoint is not None:
        g['PATH'] = args.checkpoint
    g['PATH'] = paths.expand(g['PATH'])  # None stays None: random weights
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
        from helpers import report  # only its checks here; matplotlib is imported when it draws
        report.check_destination(args.report, others=[] if args.eval_only else [g['out']])
    return name

