"""Scale a trained checkpoint's weights so that main.py's Adam epoch barely
moves it (what train.py does before saving), for one trained with --no-rescale.

    python -m tools.scale_weights RAW.ckpt OUT.ckpt

The function is the same; see helpers/weight_scaling.py for why.
"""
import sys

from helpers import flags
from helpers.checkpoints import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from helpers.model_table import MODELS, TITLES, identify
from helpers.weight_scaling import ScalingError, compact, scale_for_adam


def main(argv):
    if len(argv) != 2:
        raise flags.UsageError('usage: python -m tools.scale_weights RAW.ckpt OUT.ckpt')
    raw, out = argv
    name = identify(read_state_dict(raw))
    if name is None:
        raise CheckpointError(f'{raw} is neither a VGG16 nor a ResNet50_layer4 state dict; nothing to scale')
    model = MODELS[name]()
    load_checkpoint(model, raw)
    try:
        scale_for_adam(model)
    except ScalingError as e:
        raise CheckpointError(f'{raw}: {e}') from None
    save_checkpoint(compact(model.state_dict()), out)
    print(f'{out}: {TITLES[name]} scaled for fine-tuning, half-precision weights')


if __name__ == '__main__':
    flags.install_friendly_errors()
    main(sys.argv[1:])
