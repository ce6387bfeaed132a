"""Draw a train.py run's curves (loss, validation accuracy, learning rate per
epoch) from the log it writes beside its state.

    python -m tools.training_curves outputs/vgg16.ckpt.state.json docs/vgg16_training.png --title "VGG16"
"""
import json

from helpers import errors, flags
from helpers.report import plot_training


HINT = 'give the STATE.json that train.py writes beside its state'
FIELDS = {'epoch', 'train_loss', 'val_accuracy', 'lr'}


def read_log(path):
    try:
        with open(path) as f:
            history = json.load(f)
    except FileNotFoundError:
        raise errors.UsageError(f'{path} not found; {HINT}') from None
    except (OSError, ValueError):  # a folder, unreadable, not JSON
        history = None
    if not (isinstance(history, list) and history and all(isinstance(h, dict) and FIELDS <= h.keys() for h in history)):
        raise errors.UsageError(f"{path} is not train.py's per-epoch log; {HINT}")
    return history


def main(argv=None):
    p = flags.Parser(prog='python -m tools.training_curves', description=__doc__.splitlines()[0])
    p.add_argument('log', help="train.py's per-epoch log, STATE.json")
    p.add_argument('png')
    p.add_argument('--title', default='')
    args = p.parse_args(argv)
    history = read_log(args.log)
    try:
        drawn = plot_training(history, args.png, args.title or args.log)
    except (OSError, ValueError) as e:  # a folder that does not exist, a format matplotlib does not know
        raise errors.UsageError(f'cannot write {args.png} ({e}); give a .png path in a folder that exists') from None
    if drawn:
        print(f'wrote {args.png}')


if __name__ == '__main__':
    errors.install()
    main()
