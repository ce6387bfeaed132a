"""main.py's settings: the globals at its top, each overridden by a flag. One check for all: an edited setting
is read as its flag by the same parser, so `num_epochs = 0` and `--epochs 0` are refused alike, in a line that
names the setting. The "Choose model" lines are checked here too."""
import argparse
import os
import sys

import torch
import torch.nn as nn

from helpers import devices, paths
from helpers.checkpoints import MODELS, PRETRAINED, name_of
from helpers.errors import Mistake


def number(kind=int, least=1, below=None):
    """An argparse type: a `kind` (int or float) of at least `least` and below `below`, finite."""
    def check(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"'{text}' is not a {'whole ' if kind is int else ''}number") from None
        if not least <= value < (below if below is not None else float('inf')):
            limit = f' and below {below}' if below is not None else ''
            raise argparse.ArgumentTypeError(f'must be at least {least}{limit}, not {text}')
        return value
    return check


def path_text(text):  # `~` expanded; '' is no path
    if not text:
        raise argparse.ArgumentTypeError("'' is empty: give a path")
    return paths.expand(text)


class Parser(argparse.ArgumentParser):
    """Mistakes on the command line are one line (exit 2); in main.py's settings (`where`), a Mistake."""
    where = None

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        if self.where:
            raise Mistake(f'{self.where}: {message.split(": ", 1)[-1]}')
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')

    def given(self, argv):  # the dests of the flags `argv` gives
        words = {word.split('=', 1)[0] for word in argv}
        return {a.dest for a in self._actions if words & set(a.option_strings)}


EXAMPLES = {'DIR': 'reports/run1', 'PATH': 'outputs/model.ckpt'}
SETTINGS = {'num_epochs': '--epochs', 'learning_rate': '--lr', 'batch_size': '--batch-size', 'data_dir': '--data',
            'device': '--device', 'eval_only': '--eval-only', 'out': '--out', 'seed': '--seed', 'plain': '--plain',
            'bf16': '--bf16', 'report': '--report'}


def parser():
    p = Parser(prog='python main.py', description='Fine-tune a pretrained VGG16 or ResNet50_layer4 on CIFAR-10 for one '
               'epoch and print its test accuracy. Defaults: the settings at the top of main.py.')
    p.add_argument('--model', choices=sorted(MODELS),
                   help="this network with its shipped checkpoint (default: main.py's model lines)")
    p.add_argument('--checkpoint', type=path_text, metavar='PATH', help="start from this state dict (default: PATH)")
    p.add_argument('--data', type=path_text, metavar='DIR', default='./data', help="CIFAR-10's folder: torchvision's "
                   "(downloaded into an empty one) or DIR/train/<class>/, DIR/test/<class>/ images")
    p.add_argument('--epochs', type=number(), metavar='N', default=1)
    p.add_argument('--lr', type=number(float, 1e-12), metavar='LR', default=0.001, help="Adam's learning rate")
    p.add_argument('--batch-size', type=number(), metavar='N', default=100)
    p.add_argument('--device', type=devices.device_text, default='auto', help=devices.DEVICE_HELP)
    p.add_argument('--eval-only', action='store_true', help='only test the checkpoint')
    p.add_argument('--out', type=path_text, metavar='PATH', help='default: outputs/<model>_final.ckpt')
    p.add_argument('--seed', type=number(int, -2 ** 63, 2 ** 64), metavar='N',
                   help='seed for shuffling, augmentation and dropout (default: a fresh one)')
    p.add_argument('--plain', action='store_true', help="the assignment's own pipeline: PIL transforms, float32")
    p.add_argument('--bf16', choices=['auto', 'off'], default='auto',
                   help='auto: bf16 autocast where the CPU or GPU computes it natively; off: float32')
    p.add_argument('--report', type=path_text, metavar='DIR', help='write report.md and report.png into DIR')
    return p


CHOSEN = []  # [model, PATH] as --model or --checkpoint set them, which setup.prepare checks it is given
SAID = {}  # how the person gave each setting, for messages: '--device cuda', "device = 'cuda' at the top of main.py"



def _read_settings(p, g):
    """The settings at the top of main.py (`g`), each read through its flag."""
    args = p.parse_args([])
    for name, flag in SETTINGS.items():
        if name not in g:
            continue  # a line deleted: its flag's default
        value = g[name]
        p.where = SAID[name] = f'{name} = {value!r} at the top of main.py'
        action = next(a for a in p._actions if flag in a.option_strings)
        if action.nargs == 0:  # True/False settings
            if not isinstance(value, bool):
                p.error('use True or False')
            setattr(args, action.dest, value)
        elif value is None:
            if action.default is not None:
                p.error(f"give a value, e.g. {name} = {action.default!r}")
            setattr(args, action.dest, None)
        elif isinstance(value, bool) or not isinstance(value, (int, float, str, os.PathLike, torch.device)):
            kind = {'DIR': 'a folder name in quotes', 'PATH': 'a file name in quotes'}.get(action.metavar, 'a number')
            p.error(f"use {' or '.join(map(repr, action.choices))}" if action.choices else f'use {kind}, e.g. '
                    f'{name} = {action.default or EXAMPLES.get(action.metavar)!r}')
        else:
            p.parse_args([f'{flag}={os.fspath(value) if isinstance(value, os.PathLike) else value}'], namespace=args)
    p.where = None
    return args


def check_model(model, PATH):
    """The "Choose model" lines' values, as main.py passes them to setup.prepare: a float32 network and a path."""
    if not isinstance(model, nn.Module):
        kind = 'a class' if isinstance(model, type) else 'a function' if callable(model) else type(model).__name__
        name = getattr(model, '__name__', repr(model))
        raise Mistake(f'model = {name} in main.py is {kind}, not a network: call it, e.g. model = {name}()')
    dtypes = {p.dtype for p in model.parameters()} - {torch.float32}
    if dtypes:
        raise Mistake(f'the model is {dtypes.pop()} (a .half() or .to(...) on the model line?): leave it float32 '
                      '(the shipped weights exceed float16; bf16 is used where the hardware has it)')
    if (PATH is not None and not isinstance(PATH, (str, os.PathLike))) or PATH == '':
        raise Mistake(f"PATH = {PATH!r} in main.py: give the checkpoint's path in quotes, "
                      "e.g. PATH = './checkpoints/resnet50_cifar10.ckpt', or None for random weights")
    return paths.expand(PATH)


def plan(model, PATH, out=None, eval_only=False, num_epochs=1, report=None):
    """(PATH, out) for the model main.py passes, after the one write rule has passed every file the run will
    write: the fine-tuned model (by default named after the network), every 20th epoch's and the report."""
    PATH = check_model(model, PATH)
    given = 'the default --out' if out is None else '--out' if SAID.get('out', '').startswith('--') else 'out in main.py'
    out = out or os.path.join('outputs', f'{name_of(model) or type(model).__name__}_final.ckpt')
    outputs = [] if eval_only else [out] + [epoch_file(out, k) for k in range(20, num_epochs + 1, 20)]
    example = "out = 'outputs/model.ckpt'" if given == 'out in main.py' else None
    for path in outputs:
        paths.check_output(path, given, reading=[PATH], example=example)
    if report:
        from helpers import report as reports
        reports.check(report, others=outputs)
    return PATH, out


def epoch_file(out, epoch):
    """The checkpoint main.py saves after `epoch` (every 20th) beside `out`."""
    return f'{out.rpartition(".")[0]}_epoch{epoch}.ckpt'


def _command_line(g):
    """The command line; none in a notebook kernel, whose sys.argv is its own (`%run main.py ...` sets it)."""
    launcher = os.path.basename(sys.argv[0]) if sys.argv else ''
    return [] if '__file__' not in g or 'kernel' in launcher else sys.argv[1:]


def apply(g, argv=None):
    """Set main.py's globals `g` from its settings and the command line, all checked. --model and --checkpoint
    replace the "Choose model" lines; the model itself is checked where main.py uses it (setup.prepare)."""
    argv = _command_line(g) if argv is None else argv
    p, _ = parser(), SAID.clear()
    args = p.parse_args(argv, namespace=_read_settings(p, g))
    for name, flag in SETTINGS.items():  # a flag given names itself in messages
        if (dest := flag[2:].replace('-', '_')) in p.given(argv):
            SAID[name] = flag if isinstance(getattr(args, dest), bool) else f'{flag} {getattr(args, dest)}'
    unused = sorted(p.given(argv) & {'epochs', 'lr', 'out'}) if args.eval_only else []
    if unused:
        raise Mistake(f"--{unused[0]} does nothing with --eval-only, which only tests the checkpoint; "
                      "leave out one or the other")
    if args.model:
        g['model'], g['PATH'] = MODELS[args.model](), PRETRAINED[args.model]
    if args.checkpoint:
        g['PATH'] = args.checkpoint
    CHOSEN[:] = [args.model and g['model'], paths.expand(g['PATH'])] if args.model or args.checkpoint else []
    g.update(num_epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, data_dir=args.data,
             eval_only=args.eval_only, seed=args.seed, plain=args.plain, bf16=args.bf16, report=args.report,
             out=args.out, device=devices.pick_device(args.device, SAID.get('device')))
    if 'model' in g and 'PATH' in g:  # the "Choose model" lines above: checked now, before any work
        plan(g['model'], g['PATH'], args.out, args.eval_only, args.epochs, args.report)
