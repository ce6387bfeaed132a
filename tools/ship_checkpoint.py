"""Make a checkpoint the shipped one of its model: copy it into checkpoints/
and list its sha256 in checkpoints/SHA256SUMS (main.py checks that line).

    python -m tools.ship_checkpoint outputs/vgg16.ckpt

The one way to replace a shipped checkpoint (main.py --out and train.py
--out never do). Weights are stored in half precision where they fit, as
train.py stores them, so a float32 file (say one main.py saved) ships at half
the size: measure the shipped file. Ship a new one only when it beats the old
one on the validation split: every version stays in git history.
"""
import os

from helpers import flags
from helpers.checkpoints import CheckpointError, load_checkpoint, read_state_dict, ship_checkpoint
from helpers.model_table import MODELS, PRETRAINED, TITLES, identify
from helpers.weight_scaling import compact, looks_scaled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = flags.Parser(prog='python -m tools.ship_checkpoint', description=__doc__.splitlines()[0])
    p.add_argument('source', metavar='TRAINED.ckpt', help='a scaled checkpoint (what train.py writes)')
    source = p.parse_args(argv).source
    state = read_state_dict(source, missing_hint='give the path of a checkpoint train.py wrote')
    name = identify(state)
    if name is None:
        raise CheckpointError(f'{source} is neither a VGG16 nor a ResNet50_layer4 state dict')
    model = MODELS[name]()
    load_checkpoint(model, source)
    if not looks_scaled(model):
        raise CheckpointError(f'{source} is not scaled for the Adam epoch; run python -m tools.scale_weights '
                              f'{source} SCALED.ckpt and ship that')
    target = os.path.join(ROOT, PRETRAINED[name])
    ship_checkpoint(compact(state), target)
    print(f'{PRETRAINED[name]}: now the shipped {TITLES[name]} checkpoint (SHA256SUMS updated)')


if __name__ == '__main__':
    flags.install_friendly_errors()
    main()
