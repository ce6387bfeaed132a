"""Time main.py's fast default against the assignment's plain pipeline: whole
`python main.py` runs, the same data, checkpoint and seed per round, the arms
in alternating order so that a busy machine slows them alike (docs/speed.md)."""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from helpers.data import CLASSES, layout
from helpers.checkpoints import MODELS, PRETRAINED
from helpers.settings import Parser, number

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCURACY = re.compile(r'Accuracy of the model on the test images: ([\d.]+) %')
ARMS = {'plain': ['--plain'], 'fast': [], 'float32': ['--bf16', 'off']}


def subset(src, dst, per_class):
    """Symlinks to the first `per_class[split]` images of each class."""
    for split, n in per_class.items():
        for c in CLASSES:
            os.makedirs(os.path.join(dst, split, c))
            for name in sorted(os.listdir(os.path.join(src, split, c)))[:n]:
                os.symlink(os.path.abspath(os.path.join(src, split, c, name)), os.path.join(dst, split, c, name))
    return dst


def run(args, data, arm, seed, out):
    cmd = [sys.executable, os.path.join(ROOT, 'main.py'), '--model', args.model, '--data', data,
           '--checkpoint', args.checkpoint, '--device', args.device, '--seed', str(seed), '--out', out]
    start = time.perf_counter()
    r = subprocess.run(cmd + ARMS[arm], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f'main.py failed:\n{r.stderr}')
    return seconds, float(ACCURACY.search(r.stdout).group(1)), r.stdout.splitlines()[0]


def main():
    p = Parser(prog='python -m tools.benchmark', description=__doc__.splitlines()[0])
    p.add_argument('--data', required=True)
    p.add_argument('--model', choices=sorted(MODELS), default='resnet50')
    p.add_argument('--checkpoint', help='default: the shipped one of --model')
    p.add_argument('--device', default='auto')
    p.add_argument('--train-images', type=number(), help='use this many training images (image folders only)')
    p.add_argument('--test-images', type=number(), help='and this many test images')
    p.add_argument('--rounds', type=number(), default=3)
    p.add_argument('--seeds', type=int, nargs='+', default=[0], metavar='N',
                   help='round i runs with the i-th seed, cycling (default: 0)')
    p.add_argument('--arms', nargs='+', choices=list(ARMS), default=['plain', 'fast'],
                   help='what to run; speed-ups are over the first (default: plain fast)')
    args = p.parse_args()
    args.checkpoint = args.checkpoint or os.path.join(ROOT, PRETRAINED[args.model])
    times = {arm: [] for arm in args.arms}
    accs = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.train_images or args.test_images:
            if layout(args.data) != 'folder':
                p.error(f'--train-images and --test-images need an image folder, and {args.data} is not one')
            data = subset(args.data, os.path.join(tmp, 'data'),
                          {'train': (args.train_images or 50000) // 10, 'test': (args.test_images or 10000) // 10})
        for i in range(args.rounds):
            seed = args.seeds[i % len(args.seeds)]
            for arm in (args.arms if i % 2 == 0 else args.arms[::-1]):
                s, a, first_line = run(args, data, arm, seed, os.path.join(tmp, 'out.ckpt'))
                if i == 0:
                    print(f'{arm}: {first_line}', flush=True)
                times[arm].append(s)
                accs[arm].append(a)
                print(f'round {i + 1} seed {seed} {arm:>7}: {s:7.1f} s  accuracy {a:.2f} %', flush=True)
    base = statistics.mean(times[args.arms[0]])
    print(f'{args.model} on {args.device}, {args.rounds} rounds, seeds {args.seeds}:')
    for arm in args.arms:
        mean = statistics.mean(times[arm])
        spread = f', spread {max(accs[arm]) - min(accs[arm]):.2f}' if len(accs[arm]) > 1 else ''
        print(f'  {arm:>7}: {mean:7.1f} s, {base / mean:.2f}x over {args.arms[0]}; accuracy mean '
              f'{statistics.mean(accs[arm]):.2f} %{spread} (runs {accs[arm]})')


if __name__ == '__main__':
    main()
