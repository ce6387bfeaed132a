"""Draw a train.py run's curves (loss, validation accuracy, learning rate per
epoch) from the log it writes beside its state.

    python -m tools.training_curves outputs/vgg16.ckpt.state.json docs/vgg16_training.png --title "VGG16"
"""
import json

from helpers import flags
from helpers.report import plot_training


def main():
    p = flags.Parser(prog='python -m tools.training_curves', description=__doc__.splitlines()[0])
    p.add_argument('log', help="train.py's per-epoch log, STATE.json")
    p.add_argument('png')
    p.add_argument('--title', default='')
    args = p.parse_args()
    with open(args.log) as f:
        history = json.load(f)
    if plot_training(history, args.png, args.title or args.log):
        print(f'wrote {args.png}')


if __name__ == '__main__':
    main()
