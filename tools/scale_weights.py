"""Scale a trained checkpoint's weights so that main.py's Adam epoch barely
moves it (what train.py does before saving), for one trained with --no-rescale.

    python -m tools.scale_weights RAW.ckpt OUT.ckpt

The function is the same; see helpers/weight_scaling.py for why.
"""
from helpers import flags
from helpers.checkpoints import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from helpers.model_table import MODELS, TITLES, identify
from helpers.weight_scaling import ScalingError, compact, scale_for_adam


def main(argv=None):
    p = flags.Parser(prog='python -m tools.scale_weights', description=__doc__.splitlines()[0])
    p.add_argument('raw', metavar='RAW.ckpt', help='trained with --no-rescale')
    p.add_argument('out', metavar='OUT.ckpt')
    args = p.parse_args(argv)
    raw, out = args.raw, args.out
    name = identify(read_state_dict(raw, missing_hint='give the path of a checkpoint train.py wrote'))
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
    main()
