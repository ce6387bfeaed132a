"""Time main.py's fast default against the assignment's plain pipeline.

Both run as whole `python main.py` processes (start to the accuracy line), on
the same data, checkpoint and seed, alternating plain and fast so that a busy
machine slows both alike. Prints each run, the mean times, the ratio and both
accuracies.

    python -m tools.benchmark --data DIR --model resnet50 --checkpoint PATH \
        [--train-images 2000 --test-images 1000] [--rounds 3] [--device cpu]

With --train-images/--test-images an image folder is cut down (symlinks in a
temporary folder, the first images of each class) so that a CPU run takes
minutes, not hours.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from helpers.data import CLASSES, layout
from helpers.flags import Parser, positive_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCURACY = re.compile(r'Accuracy of the model on the test images: ([\d.]+) %')


def subset(src, dst, per_class):
    for split, n in per_class.items():
        for c in CLASSES:
            os.makedirs(os.path.join(dst, split, c))
            for name in sorted(os.listdir(os.path.join(src, split, c)))[:n]:
                os.symlink(os.path.abspath(os.path.join(src, split, c, name)), os.path.join(dst, split, c, name))
    return dst


def run(args, data, plain, out):
    cmd = [sys.executable, os.path.join(ROOT, 'main.py'), '--model', args.model, '--data', data,
           '--checkpoint', args.checkpoint, '--device', args.device, '--seed', '0', '--out', out]
    start = time.perf_counter()
    r = subprocess.run(cmd + (['--plain'] if plain else []), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f'main.py failed:\n{r.stderr}')
    return seconds, float(ACCURACY.search(r.stdout).group(1))


def main():
    p = Parser(prog='python -m tools.benchmark', description=__doc__.splitlines()[0])
    p.add_argument('--data', required=True)
    p.add_model_flag(default='resnet50')
    p.add_argument('--checkpoint', required=True)
    p.add_device_flag()
    p.add_argument('--train-images', type=positive_int, help='use this many training images (image folders only)')
    p.add_argument('--test-images', type=positive_int, help='and this many test images')
    p.add_argument('--rounds', type=positive_int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.train_images or args.test_images:
            if layout(args.data) != 'folder':
                p.error(f'--train-images and --test-images need an image folder, and {args.data} is not one')
            data = subset(args.data, os.path.join(tmp, 'data'),
                          {'train': (args.train_images or 50000) // 10, 'test': (args.test_images or 10000) // 10})
        times = {True: [], False: []}
        accs = {True: [], False: []}
        for i in range(args.rounds):
            for plain in ((True, False) if i % 2 == 0 else (False, True)):
                s, a = run(args, data, plain, os.path.join(tmp, 'out.ckpt'))
                times[plain].append(s)
                accs[plain].append(a)
                print(f"round {i + 1} {'plain' if plain else 'fast '}: {s:7.1f} s  accuracy {a:.2f} %", flush=True)
    plain_s, fast_s = statistics.mean(times[True]), statistics.mean(times[False])
    print(f'{args.model} on {args.device}, {args.rounds} rounds: plain {plain_s:.1f} s, fast {fast_s:.1f} s, '
          f'speed-up {plain_s / fast_s:.2f}x; accuracy plain {statistics.mean(accs[True]):.2f} % '
          f'(runs {accs[True]}), fast {statistics.mean(accs[False]):.2f} % (runs {accs[False]})')


if __name__ == '__main__':
    main()
