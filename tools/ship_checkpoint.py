"""Make a checkpoint the shipped one of its model: copy it into checkpoints/
and list its sha256 in checkpoints/SHA256SUMS (main.py checks that line).

    python -m tools.ship_checkpoint outputs/vgg16.ckpt

The one way to replace a shipped checkpoint (main.py --out and train.py
--out never write into checkpoints/). It writes both files or neither: a
failure (a full disk, a damaged SHA256SUMS) leaves the old pair as it was.
Weights are stored in half precision where they fit, as train.py stores
them, so a float32 file (say one main.py saved) ships at half the size:
measure the shipped file. Every version stays in git history.
"""
import os

from helpers import errors, flags
from helpers.checkpoints import CheckpointError, load_either, ship_checkpoint
from helpers.model_table import PRETRAINED, TITLES
from helpers.weight_scaling import compact, looks_scaled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULE = ('The ship rule (docs/checkpoints.md): ship a new checkpoint only when, on the validation split, the mean '
        "accuracy of main.py's default run over seeds 0, 1 and 2 beats the shipped checkpoint's mean (same "
        'machine) by at least 0.5 point, and its --eval-only accuracy is within 1 point of that mean.')


def main(argv=None):
    p = flags.Parser(prog='python -m tools.ship_checkpoint', description=__doc__.splitlines()[0], epilog=RULE)
    p.add_argument('source', metavar='TRAINED.ckpt', help='a scaled checkpoint (what train.py writes)')
    source = p.parse_args(argv).source
    name, model = load_either(source, missing_hint='give the path of a checkpoint train.py wrote',
                              otherwise='ship one of the two')
    if not looks_scaled(model):
        raise CheckpointError(f'{source} is not scaled for the Adam epoch; run python -m tools.scale_weights '
                              f'{source} SCALED.ckpt and ship that')
    target = os.path.join(ROOT, PRETRAINED[name])
    ship_checkpoint(compact(model.state_dict()), target)
    print(f'{PRETRAINED[name]}: now the shipped {TITLES[name]} checkpoint (SHA256SUMS updated)')


if __name__ == '__main__':
    errors.install()
    main()
