"""Make a checkpoint the shipped one of its model: write it into checkpoints/
(scaled for the Adam epoch if it is not yet, half-precision weights where they
fit) and list its sha256 in checkpoints/SHA256SUMS, which main.py checks.

    python -m tools.ship_checkpoint outputs/vgg16.ckpt"""
import os

from helpers import errors
from helpers.checkpoints import PRETRAINED, SUMS, TITLES, load_either, save, sha256
from helpers.paths import PROJECT, write_atomic
from helpers.settings import Parser
from helpers.weight_scaling import compact, looks_scaled, scale_for_adam

RULE = ('The ship rule (docs/checkpoints.md): ship a new checkpoint only when, on the validation split, the mean '
        "accuracy of main.py's default run over seeds 0, 1 and 2 beats the shipped checkpoint's mean (same "
        'machine) by at least 0.5 point, and its --eval-only accuracy is within 1 point of that mean.')


def main(argv=None):
    p = Parser(prog='python -m tools.ship_checkpoint', description=__doc__.splitlines()[0], epilog=RULE)
    p.add_argument('source', metavar='TRAINED.ckpt', help='what train.py wrote')
    source = p.parse_args(argv).source
    name, model = load_either(source, 'give the path of a checkpoint train.py wrote')
    target = os.path.join(PROJECT, PRETRAINED[name])
    save(compact((model if looks_scaled(model) else scale_for_adam(model)).state_dict()), target)
    with open(sums := os.path.join(os.path.dirname(target), SUMS), encoding='utf-8-sig') as f:
        lines = [line for line in f if line.strip() and not line.rstrip().endswith(os.path.basename(target))]
    lines.append(f'{sha256(target)}  {os.path.basename(target)}\n')
    write_atomic(sums, lambda f: f.write(''.join(sorted(lines, key=lambda x: x.split()[-1])).encode()))
    print(f'{PRETRAINED[name]}: now the shipped {TITLES[name]} checkpoint (SHA256SUMS updated; commit both)')


if __name__ == '__main__':
    errors.install()
    main()
