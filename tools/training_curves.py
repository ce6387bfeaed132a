"""Draw a train.py run's curves (loss, validation accuracy, learning rate per
epoch) from the state it writes beside its checkpoint.

    python -m tools.training_curves outputs/vgg16.ckpt.state docs/vgg16_training.png --title "VGG16"
"""
import os

import torch

from helpers import errors, paths
from helpers.errors import Mistake
from helpers.report import plot_training
from helpers.settings import Parser, path_text


def main(argv=None):
    p = Parser(prog='python -m tools.training_curves', description=__doc__.splitlines()[0])
    p.add_argument('state', type=path_text, help="train.py's OUT.state")
    p.add_argument('png', type=path_text)
    p.add_argument('--title', default='')
    args = p.parse_args(argv)
    if not os.path.isfile(args.state):
        raise paths.missing(args.state, "train.py's state", 'give the OUT.state file train.py writes')
    paths.check_output(args.png, 'PNG', suffixes=('.png',))
    try:
        history = torch.load(args.state, weights_only=True)['history']
    except Exception:  # noqa: BLE001 - whatever it is, it is not a state train.py wrote
        raise Mistake(f"{paths.shown(args.state)} is not train.py's state; give the OUT.state file it writes") from None
    if plot_training(history, args.png, args.title or args.state):
        print(f'wrote {args.png}')


if __name__ == '__main__':
    errors.install()
    main()
