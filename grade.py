"""Grade a class by test accuracy: every checkpoint handed in, one table, no student code run (docs/grading.md)."""
import argparse
import collections
import csv
import hashlib
import io
import os
import pathlib
import re
import time
import unicodedata
import zipfile

import torch

from helpers import checkpoints, data, devices, errors, fast_path, paths
from helpers.checkpoints import MODELS, TITLES
from helpers.errors import Mistake
from helpers.progress import progress
from helpers.settings import Parser, path_text

COLUMNS = 'student file model accuracy flags note correct total sha256 precision seconds'.split()
HEADER = ('\ufeff' + ','.join(COLUMNS)).encode()  # how our table begins: UTF-8 with a BOM, so Excel shows Hangul
BARS = {'resnet50': 80, 'vgg16': 85}  # the course's bars, in %
LIMIT = 1 << 30  # a file or zip member over 1 GB is not read
NEAR = {'ResNet50_layer4': 0.75}  # a change cosine from here up is a near copy (docs/grading.md); VGG16: not measured


def submissions(root):
    """[(student, file, size, a call reading it or why not)] per checkpoint (a zip's: in memory) or empty entry."""
    items = []
    for top in sorted(os.listdir(root)):
        path, rows = os.path.join(root, top), []
        walk = sorted(os.walk(path)) if os.path.isdir(path) and not os.path.islink(path) else [('', [], [path])]
        for file in (os.path.join(folder, name) for folder, _, names in walk for name in sorted(names)):
            label, suffix = os.path.relpath(file, root).replace(os.sep, '/'), file.lower().endswith
            if not paths.inside(file, root):
                rows.append((label, 0, 'a link leading outside SUBMISSIONS; not followed'))
            elif suffix('.zip'):
                try:
                    with zipfile.ZipFile(file) as z:
                        rows += [(f'{label}/{m.filename}', m.file_size, lambda m=m, z=file: zipfile.ZipFile(z).read(m))
                                 for m in z.infolist() if m.filename.lower().endswith(paths.CHECKPOINT_SUFFIXES)]
                except (zipfile.BadZipFile, OSError) as e:
                    rows.append((label, 0, f'a damaged zip ({e})'))
            elif suffix(paths.CHECKPOINT_SUFFIXES):  # a link to nothing: read() says so
                rows.append((label, os.path.exists(file) and os.path.getsize(file), pathlib.Path(file).read_bytes))
        name = unicodedata.normalize('NFC', top if os.path.isdir(path) else os.path.splitext(top)[0])  # a Mac's too
        items += [(re.split(r'_\d+_', name)[0] or name, *row) for row in rows or [(top, 0, 'no checkpoint in it')]
                  if not any(p.startswith(data.HIDDEN) and p.strip('.') for p in row[0].split('/'))]  # '..' is shown
    return items


def weights(blob):
    """(model name, its state dict fitted to it) of a checkpoint's bytes; a Mistake for anything else."""
    for state in checkpoints.read('it', data=blob):
        if name := checkpoints.identify(state):
            return name, checkpoints._fit(state, checkpoints._model_shapes(name).keys())
    raise Mistake('neither a VGG16 nor a ResNet50_layer4 state dict (its names and shapes fit neither); not graded')


def digest(state):
    """sha256 of the weights as graded (float32 values by name): a re-saved or re-wrapped copy has the same."""
    keys = sorted(checkpoints.shapes(state))  # not num_batches_tracked, a counter
    return hashlib.sha256(torch.cat([state[k].float().flatten() for k in keys]).numpy()).digest()


def change(state, base):
    """~1,000 values of each weight tensor's change from `base`, at length 1: a dot product is the mean cosine."""
    step = {k: max(1, v.numel() // 1000) for k, v in base.items() if v.is_floating_point() and 'running' not in k}
    parts = [torch.nn.functional.normalize(state[k].flatten()[::n].double() - base[k].flatten()[::n].double(), dim=0)
             for k, n in step.items()]
    return torch.cat(parts).float() / max(sum(bool(p.any()) for p in parts), 1) ** 0.5


def evaluate(model, loader, autocast):  # correct predictions, counted as main.py's test loop counts them
    with torch.no_grad(), autocast:
        return int(sum((torch.max(model(images).data, 1)[1] == labels).sum() for images, labels in loader))


def grade(name, label, size, read, run, done):
    """One row: a checkpoint read, identified and tested (or as `done` has it), or a note saying why not."""
    row, start = dict.fromkeys(COLUMNS, '') | {'student': name, 'file': label, '_near': set()}, time.perf_counter()
    try:
        if isinstance(read, str) or size > LIMIT:
            raise Mistake(read if isinstance(read, str) else f'{size / 2 ** 30:.1f} GB, over the 1 GB limit; not read')
        model_name, state = weights(blob := read())
        row.update(model=TITLES[model_name], sha256=hashlib.sha256(blob).hexdigest())
        named = [n for n in MODELS if n.rstrip('0123456789') in label.rsplit('/', 1)[-1].lower()] or [model_name]
        row['note'] = '' if model_name in named else f'named {named[0]} but holds {TITLES[model_name]} weights'
        if model_name not in run.models:
            model = fast_path.prepare(MODELS[model_name](), run.device, bf16=run.bf16).eval()
            run.models[model_name] = model, data.TensorLoader(*run.test, 100, device=run.device,
                                                              channels_last=fast_path.channels_last(model, run.device))
        model, loader = run.models[model_name]
        checkpoints.load(model, 'it', [state])  # or a Mistake: NaN, infinity
        row['_digest'] = digest(state)
        row['_change'] = change(state, run.shipped[model_name]) if TITLES[model_name] in NEAR else torch.zeros(0)
        if earlier := done.get((label, row['sha256'], run.precision)):
            return row | {k: earlier[k] for k in ('accuracy', 'correct', 'total', 'precision', 'seconds')}
        correct, total = evaluate(model, loader, run.autocast), len(run.test[1])
        row.update(accuracy=str(100 * correct / total), correct=correct, total=total, precision=run.precision)
    except (Mistake, Exception) as e:  # noqa: BLE001 - whatever is in a file: a row with a note, never a stop
        row['note'] = e.code.removeprefix('error: ') if isinstance(e, Mistake) else f'{type(e).__name__}: {e}'[:200]
    return row | {'seconds': f'{time.perf_counter() - start:.2f}'}


def write(path, rows, shipped):
    """The table, each row flagged: one of a student's files; the shipped weights; the same weights as another's."""
    count, same = collections.Counter(r['student'] for r in rows), collections.defaultdict(set)
    for r in rows:
        same[r.get('_digest')].add(r['student'])
    for r in (r for r in rows if '_near' in r):  # else an earlier run's row not reached yet: as it was
        others = sorted(same[r['_digest']] - {r['student']}) if r.get('_digest') else []
        near = sorted(r['_near'] - {r['student'], *others})
        r['flags'] = '; '.join(filter(None, [f'one of {count[r["student"]]} files' * (count[r['student']] > 1),
                                             'shipped' if r.get('_digest') in shipped else
                                             'same as ' + ', '.join(others) if others else '',
                                             'near copy of ' + ', '.join(near) if near else '']))
    text = io.StringIO(newline='')
    csv.DictWriter(text, COLUMNS, extrasaction='ignore').writerows([dict(zip(COLUMNS, COLUMNS)), *rows])
    paths.write_atomic(path, lambda f: f.write(text.getvalue().encode('utf-8-sig')))


def draw(rows, path):
    from matplotlib.figure import Figure
    ax = Figure(figsize=(8, 4.5), dpi=120).subplots()
    for (name, title), color in zip(TITLES.items(), ('tab:blue', 'tab:orange')):
        acc = [float(r['accuracy']) for r in rows if r['model'] == title and r['accuracy']]
        ax.hist(acc, 200, range=(0, 100), histtype='stepfilled', color=color, alpha=0.6, label=f'{title}: {len(acc)}')
        ax.axvline(BARS[name], color=color, linestyle='--', label=f"{title}'s bar, {BARS[name]} %")
    ax.set(xlabel='test accuracy (%)', ylabel='checkpoints', title='Test accuracy of the class')
    ax.legend(loc='upper left')
    paths.write_atomic(path, lambda f: ax.figure.savefig(f, format='png'))


def show(rows):  # in a terminal, Hangul and other wide characters take two columns
    cells = [COLUMNS[:6]] + [[str(r[c]) for c in COLUMNS[:6]] for r in rows]
    width = {c: sum(1 + (unicodedata.east_asian_width(x) in 'WF') for x in c) for line in cells for c in line}
    widths = [max(width[c] for c in column) for column in zip(*cells)]
    for line in cells:
        print('  '.join(c + ' ' * (w - width[c]) for c, w in zip(line, widths)).rstrip())


def main(argv=None):
    p = Parser(prog='python grade.py', description=__doc__.split(' (')[0])
    p.add_argument('submissions', type=path_text, metavar='SUBMISSIONS', help="a course site's download of the class")
    p.add_argument('--data', type=path_text, metavar='DIR', default='./data', help="as main.py's: its test split")
    p.add_argument('--out', type=path_text, metavar='PATH', default='grades.csv', help='the table; PATH.png beside it')
    p.add_argument('--device', type=devices.device_text, default='auto', help=devices.DEVICE_HELP)
    p.add_argument('--bf16', action='store_true', help='bf16 autocast where the hardware has it (default: float32)')
    args = p.parse_args(argv)
    root, out, picture = args.submissions, args.out, os.path.splitext(args.out)[0] + '.png'
    if not os.path.isdir(root):
        raise Mistake(f"{paths.shown(root)} is a file; unpack it (a course site's zip?) and give its folder") \
            if os.path.exists(root) else paths.missing(root, 'submissions folder', 'give the folder of the class')
    if paths.inside(out, root):
        raise Mistake(f'--out {paths.shown(out)} is inside SUBMISSIONS, where nothing is written; choose another --out')
    paths.check_output(out, '--out', suffixes=('.csv',), begins=(HEADER,), example='--out grades.csv')
    paths.check_output(picture, "--out's picture", suffixes=('.png',), begins=(b'\x89PNG',), example='--out grades.csv')
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    if world > 1:  # under torchrun only rows travel between the processes: gloo serves with and without GPUs
        torch.distributed.init_process_group('gloo')
    device = devices.pick_device(args.device)
    if device.type == 'cuda' and world > 1:
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count())
    test, autocast = data.decode(args.data, 'test'), devices.autocast(device, bf16=args.bf16)
    # the test data is known by its decoded pixels and labels: the same images grade alike wherever they lie
    test_sum = hashlib.sha256(test[0].numpy().tobytes() + test[1].numpy().tobytes()).hexdigest()[:16]
    run = argparse.Namespace(device=device, test=test, autocast=autocast, bf16=isinstance(autocast, torch.autocast))
    run.models, run.precision = {}, f"{'bf16' if run.bf16 else 'float32'}, test data {test_sum}"
    run.shipped = {name: weights(pathlib.Path(paths.PROJECT, path).read_bytes())[1]
                   for name, path in checkpoints.PRETRAINED.items()}
    shipped = {digest(state) for state in run.shipped.values()}
    old = list(csv.DictReader(io.StringIO(pathlib.Path(out).read_text('utf-8-sig') if os.path.isfile(out) else '')))
    done = {(r['file'], r['sha256'], r['precision']): r for r in old if r['accuracy']}
    items, rows = submissions(root), []
    firsts = range(0, len(items), world)  # each process grades every world-th row
    for first in progress(firsts, f'grading on {device}') if rank == 0 else firsts:
        batch = [grade(*items[first + rank], run, done) if first + rank < len(items) else None] * world
        if world > 1:
            torch.distributed.all_gather_object(batch, batch[0])
        for row in filter(None, batch):  # near copies: its change against each earlier row's of the model
            for other in (o for o in rows if o['model'] == row['model'] and o.get('_digest') and row.get('_digest')):
                if float(row['_change'] @ other['_change']) >= NEAR.get(row['model'], 2):  # 2: never
                    row['_near'], other['_near'] = row['_near'] | {other['student']}, other['_near'] | {row['student']}
            rows.append(row)
        if rank == 0:  # after every row: interrupted, the table keeps what was graded and the rows not reached yet
            write(out, rows + [r for r in old if r['file'] not in {row['file'] for row in rows}], shipped)
    if rank == 0:
        write(out, rows, shipped)
        draw(rows, picture)
        show(rows)
        print(f'Wrote {out} and {picture}')


if __name__ == '__main__':
    errors.install()
    main()
