"""Scale a trained checkpoint's weights so that main.py's Adam epoch barely
moves it (what train.py does before saving), for one trained with --no-rescale.

    python -m tools.scale_weights RAW.ckpt OUT.ckpt

The function is the same; see helpers/weight_scaling.py for why.
"""
from helpers import errors, flags
from helpers.checkpoints import CheckpointError, load_either, save_checkpoint
from helpers.model_table import TITLES
from helpers.weight_scaling import ScalingError, compact, scale_for_adam


def main(argv=None):
    p = flags.Parser(prog='python -m tools.scale_weights', description=__doc__.splitlines()[0])
    p.add_argument('raw', metavar='RAW.ckpt', help='trained with --no-rescale')
    p.add_argument('out', metavar='OUT.ckpt')
    args = p.parse_args(argv)
    raw, out = args.raw, args.out
    name, model = load_either(raw, missing_hint='give the path of a checkpoint train.py wrote',
                              otherwise='nothing to scale')
    try:
        scale_for_adam(model)
    except ScalingError as e:
        raise CheckpointError(f'{raw}: {e}') from None
    save_checkpoint(compact(model.state_dict()), out)
    print(f'{out}: {TITLES[name]} scaled for fine-tuning, half-precision weights')


if __name__ == '__main__':
    errors.install()
    main()
