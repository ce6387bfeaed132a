"""Checkpoint I/O for main.py, train.py, the tools and the tests.

A checkpoint is the assignment's plain state dict (`torch.save(model.state_dict())`).
Loading reads weights only (no pickled code runs), checks shipped files against
SHA256SUMS beside them, and says in one line what is wrong with a bad file.
Before torch.load, a checkpoint's zip entries are measured: one that would
unpack to more than the model's weights need is refused (a small file cannot
make a large allocation). Whether a refused file holds pickled code is decided
from the globals its pickle names, never from torch's message. A checkpoint
whose weights hold NaN or infinity is named as such (an overflowed BatchNorm
variance aside: such a model still tests, and main.py names it). Saving
refuses weights that hold NaN or infinity (a diverged run saves nothing), and
writes contiguous CPU tensors (so that a GPU run's checkpoint loads with the
course's plain `torch.load(PATH)` anywhere) to a temporary file and renames it
into place, so an interrupted save never leaves half a file. `save_checkpoint`
never writes into the project's checkpoints/ folder, over a checkpoint listed
in a SHA256SUMS, or over a SHA256SUMS, also through symlinks or `..`;
`ship_checkpoint` is the one way to replace a shipped checkpoint, and it
writes the file and its SHA256SUMS line together (both or neither).
"""
import functools
import hashlib
import io
import os
import pickle
import pickletools
import string
import tempfile
import time
import zipfile

import torch

from helpers import paths
from helpers.errors import SAVED, CheckpointError, reason
from helpers.model_table import MODELS, TITLES, essential, identify, name_of, resembles, state_shapes, title_of

SUMS = 'SHA256SUMS'
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_FOLDER = os.path.join(PROJECT, 'checkpoints')  # the shipped checkpoints and their SHA256SUMS
LFS_MAGIC = b'version https://git-lfs'
ZIP_MAGIC = b'PK\x03\x04'  # torch.save's format since 1.6; older files are one pickle after another,
LEGACY_MAGIC = b'\x80\x02\x8a\n'  # ... the first torch's magic number as a pickled long
STALE_TEMP_SECONDS = 600  # a save's temporary file older than this was left by a killed save


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def read_sums(folder):
    """{file name: sha256} from the SHA256SUMS in `folder` ({} when there is none), or a CheckpointError
    when it cannot be read. The one reader of these files: checking, guarding and shipping all use it."""
    sums = os.path.join(folder, SUMS)
    if not os.path.isfile(sums):
        return {}
    restore = f"restore it with `git checkout -- {sums}`"
    try:
        with open(sums, encoding='utf-8-sig') as f:  # an editor may have added a byte-order mark
            text = f.read()
    except UnicodeDecodeError:
        raise CheckpointError(f"{sums} is not a list of sha256 sums (it is not text); {restore}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {sums} ({e.strerror or e}); make it readable or {restore}") from None
    listed = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 1)
        if not parts:
            continue  # a blank line
        if len(parts) != 2 or len(parts[0]) != 64 or not set(parts[0]) <= set(string.hexdigits):
            raise CheckpointError(f"line {number} of {sums} is not '<sha256>  <file name>'; {restore}")
        listed[parts[1].strip().lstrip('*')] = parts[0].lower()  # '*': sha256sum's binary-mode mark
    return listed


def shipped_sum(path):
    """The sha256 that SHA256SUMS beside `path` lists for it, or None. Real paths: a symlink or `..`
    in `path` leads to the file itself, and so to its line; so does another letter case on a
    case-insensitive file system (macOS, Windows), where the file system says it is the same file."""
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    listed = read_sums(folder)
    if os.path.basename(real) in listed:
        return listed[os.path.basename(real)]
    return next((digest for name, digest in listed.items() if paths.same_file(os.path.join(folder, name), real)),
                None)


def read_state_dict(path, missing_hint='pass --checkpoint PATH, or make one with train.py (see README)', model=None):
    """The state dict in `path`, read as weights only, or a CheckpointError (`missing_hint`: what to do
    when there is no such file, in the words of the command that was run; `model`: the model it is for,
    when known, which bounds how much the file may unpack to)."""
    if os.path.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith(('.ckpt', '.pt', '.pth')))
        raise CheckpointError(f"{path} is a folder; give a checkpoint file" + (
            f" in it, e.g. {os.path.join(path, inside[0])}" if inside else ""))
    if not os.path.isfile(path):
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not os.path.isabs(path) and os.path.isfile(os.path.join(project, path)):  # run from another folder
            raise CheckpointError(f"checkpoint not found: {path} (looked in {os.path.abspath(path)}); "
                                  f"relative paths start from the folder you run in: cd {project} first")
        raise CheckpointError(f"checkpoint not found: {path} (looked in {os.path.abspath(path)}); "
                              f"{missing_hint}")
    try:
        with open(path, 'rb') as f:
            head = f.read(len(LFS_MAGIC))
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror or e}); make it readable") from None
    if head == LFS_MAGIC:
        raise CheckpointError(f"{path} is a Git LFS pointer, not the checkpoint itself; "
                              "fetch the real file with `git lfs pull` (or download it again)")
    expected = shipped_sum(path)
    if expected is not None and sha256(path) != expected:
        raise CheckpointError(f"{path} does not match its line in {SUMS} (damaged or changed); "
                              f"restore it with `git checkout -- {path}`")
    if head.startswith(ZIP_MAGIC):
        _check_zip_contents(path)
        _check_archive(path, *(_weights_size(model) if model is not None else _any_weights_size()))
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
        # what the pickle names decides, not torch's message, whose wording changes between versions
        if not all(_weights_only(name) for name in _pickled_globals(path)):  # e.g. torch.save(model)
            raise CheckpointError(f"refused to load {path}: it holds pickled code or objects, not just "
                                  "weights, and loading it could run that code; save a plain state dict: "
                                  "torch.save(model.state_dict(), PATH)") from None
        if isinstance(e, pickle.UnpicklingError):
            raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint{_why(e)}; "
                                  "download or copy it again") from None
        raise CheckpointError(f"{path} is damaged or truncated{_why(e)}; "
                              "download or copy it again") from None
    return _strip_prefix(_weights_in(path, state, model), model)


def _is_weights(value):
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _weights_in(path, state, model):
    """The state dict in what torch.load gave: itself, or the one entry of a wrapper that holds weights
    ({'state_dict': ...}, {'model': ...}, the PyTorch tutorial's {'epoch', 'model_state_dict', ...})."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(state).__name__}); "
                              "save one with torch.save(model.state_dict(), PATH)")
    if not state or all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    if {'args', 'epoch', 'model', 'optimizer'} <= state.keys():
        out = path[:-len('.state')] if path.endswith('.state') else 'OUT'
        raise CheckpointError(f"{path} is train.py's training state, not a checkpoint; pass the checkpoint "
                              f"train.py wrote ({out}), or go on training with python train.py --resume {path}")
    found = [k for k, v in state.items() if _is_weights(v)]
    if 'state_dict' in found:
        found = ['state_dict']  # the common wrapper around the same thing
    if len(found) > 1 and model is not None:  # e.g. the model's weights and an EMA copy: the one that fits
        found = [k for k in found if essential(_strip_prefix(state[k], model)) == essential(model.state_dict())]
    if len(found) == 1:
        return state[found[0]]
    entries = ', '.join(repr(k) for k in list(state)[:6]) + (', ...' if len(state) > 6 else '')
    if found:
        raise CheckpointError(f"{path} holds several sets of weights ({', '.join(map(repr, found))}); save the one "
                              "you mean alone: torch.save(checkpoint[KEY], PATH)")
    odd = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    what = (f'a dict with a {type(state[odd]).__name__} at {odd!r}' if any(isinstance(v, torch.Tensor) for v in
            state.values()) else f'a dict of {entries}, none of them weights')
    raise CheckpointError(f"{path} is not a state dict (it holds {what}); save one with "
                          "torch.save(model.state_dict(), PATH)")


def _strip_prefix(state, model):
    """`state` with a prefix that every key has taken off, when that is what makes it fit: DataParallel's
    `module.`, torch.compile's `_orig_mod.`, a wrapper's `model.`, or several of them."""
    if not state:
        return state
    wanted = essential(model.state_dict()) if model is not None else None
    fits = (lambda keys: essential(keys) == wanted) if wanted is not None else (lambda keys: resembles(keys))
    stripped = state
    while not fits(stripped.keys()):
        first = next(iter(stripped)).split('.', 1)[0] + '.'
        if first == next(iter(stripped)) + '.' or not all(k.startswith(first) for k in stripped):
            break
        stripped = {k[len(first):]: v for k, v in stripped.items()}
    if fits(stripped.keys()):
        return stripped
    for prefix in ('module.', '_orig_mod.'):  # nothing fits: take off these two anyway, for the messages
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _pickle_entry(names):
    """The name of the pickle (data.pkl) among a torch.save zip's entries, or None when there is none."""
    return next((n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')), None)


def _check_zip_contents(path):
    """A CheckpointError for a zip file that is no state dict: a TorchScript model, or an archive of other
    files (a zip of images, say)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names what is wrong with it
    if any(n.endswith('constants.pkl') or '/code/__torch__' in n for n in names):
        raise CheckpointError(f"{path} is a TorchScript model (torch.jit.save), not a state dict; save its weights "
                              f"with torch.save(torch.jit.load('{path}').state_dict(), 'weights.ckpt') and pass that")
    if names and _pickle_entry(names) is None:
        raise CheckpointError(f"{path} is a zip archive of other files ({len(names)}, e.g. {names[0]!r}), not a "
                              "PyTorch checkpoint; give the file torch.save(model.state_dict(), PATH) wrote")


def is_checkpoint_file(path):
    """True when `path` holds what torch.save writes (or nothing at all): the only files --out replaces."""
    try:
        if os.path.getsize(path) == 0:
            return True
        with open(path, 'rb') as f:
            head = f.read(len(LEGACY_MAGIC))
        if head == LEGACY_MAGIC:
            return True
        with zipfile.ZipFile(path) as z:
            return _pickle_entry(z.namelist()) is not None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def _weights_size(model):
    """(most bytes, most entries) a small checkpoint of `model` may unpack to: twice its weights' size, room
    for float64 weights, and at least an assignment model's float32 state dict, so that the other model's
    checkpoint is named as such. (A larger file is read when it really holds that much: _check_archive.)"""
    state = model.state_dict()
    need = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    largest, keys = _assignment_sizes()
    return max(2 * need, largest) + (1 << 20), max(4 * len(state), 4 * keys) + 64  # + an optimizer's state


@functools.lru_cache(maxsize=None)
def _assignment_sizes():
    """(bytes, keys) of the larger float32 state dict of VGG16 and ResNet50_layer4, found without weights."""
    shapes = [state_shapes(name) for name in MODELS]
    return (max(4 * sum(torch.Size(s).numel() for s in model.values()) for model in shapes),
            max(len(model) for model in shapes))


def _any_weights_size():
    """(most bytes, most entries) for a checkpoint read before its model is known, or train.py's state
    (weights, momentum, averaged weights, the teacher's predictions): four times the larger model."""
    largest, keys = _assignment_sizes()
    return 4 * largest + (64 << 20), 4 * keys + 64


def _check_archive(path, most_bytes, most_entries):
    """Refuse, before torch.load allocates anything, a zip checkpoint that would unpack to more than
    `most_bytes` (torch allocates each entry's uncompressed size, which a tiny deflated file can make huge)."""
    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names what is wrong with it
    unpacked = sum(e.file_size for e in entries)
    # torch.save stores entries uncompressed, so a real file holds what it unpacks to: a larger one of
    # another model, or a wrapper that also holds Adam's moments, is read (and judged by its weights)
    most_bytes = max(most_bytes, os.path.getsize(path) + (1 << 20))
    if unpacked > most_bytes or len(entries) > most_entries:
        raise CheckpointError(f"{path} would unpack to {unpacked / 2 ** 20:.0f} MiB in {len(entries)} entries, more "
                              f"than the weights it should hold need (at most {most_bytes / 2 ** 20:.0f} MiB in "
                              f"{most_entries}); refused before reading it: it was made for another model, or altered; "
                              "use another")


# what torch.save writes for a state dict: tensors rebuilt from storages, in an OrderedDict
TENSOR_GLOBALS = {'collections.OrderedDict', '_codecs.encode', 'torch.Size', 'torch.device',
                  'torch._tensor._rebuild_from_type_v2', 'torch.storage.UntypedStorage'}


def _weights_only(name):
    """True for a global that a pickle of tensors names (tensor rebuilding, storage classes, dtypes)."""
    module, _, attr = name.rpartition('.')
    return (name in TENSOR_GLOBALS or module == 'torch._utils' and attr.startswith('_rebuild_')
            or module == 'torch' and (attr.endswith('Storage') or isinstance(getattr(torch, attr, None), torch.dtype)))


def _pickled_globals(path):
    """'module.name' of every global the checkpoint's pickle would import, found by reading its opcodes
    (nothing is run): data.pkl of a zip checkpoint, else the pickles at the start of the file."""
    try:
        with open(path, 'rb') as f:
            zipped = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        if zipped:
            with zipfile.ZipFile(path) as z:
                pkl = _pickle_entry(z.namelist())
                data = z.read(pkl)  # bounded by _check_archive
        else:
            with open(path, 'rb') as f:
                data = f.read(64 << 20)
    except Exception:  # noqa: BLE001 - no pickle to read: nothing named
        return set()
    found, recent, memo = set(), [None, None], {}  # recent: what the last two opcodes pushed
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # a legacy file is several pickles in a row
            for op, arg, _ in pickletools.genops(stream):
                value = None
                if op.name in ('GLOBAL', 'INST'):
                    found.add(arg.replace(' ', '.'))
                elif op.name == 'STACK_GLOBAL':  # protocol 4+: module and name were pushed as strings
                    found.add(f'{recent[-2]}.{recent[-1]}')
                elif op.name in ('MEMOIZE', 'PUT', 'BINPUT', 'LONG_BINPUT'):
                    memo[len(memo) if op.name == 'MEMOIZE' else arg] = recent[-1]
                    continue  # pushes nothing
                elif op.name in ('GET', 'BINGET', 'LONG_BINGET'):
                    value = memo.get(arg)
                elif isinstance(arg, str):
                    value = arg
                recent = [recent[-1], value]
    except Exception:  # noqa: BLE001 - the rest is not a pickle (a legacy file's raw storages, or damage)
        pass
    return found


def _why(e):
    """torch.load's failure as ' (first line)', or '' for the weights-only unpickler's, which is
    advice to load the file unsafely whatever the file is (a text file gets it too), not a reason."""
    if isinstance(e, pickle.UnpicklingError):
        return ''
    return f" ({reason(e)})"


def load_checkpoint(model, path, state=None):
    """Load `path` into `model` (strictly, cast to the model's dtypes) or raise CheckpointError.

    `state`: what read_state_dict(path) returned, when the caller has read it already."""
    state = read_state_dict(path, model=model) if state is None else state
    name = name_of(model)
    title = title_of(model)
    odd = next(((k, _not_plain(v)) for k, v in state.items() if _not_plain(v)), None)
    if odd:
        raise CheckpointError(f"{path} holds {odd[1]} at {odd[0]!r}, not a plain tensor of weights; "
                              "save the float model's torch.save(model.state_dict(), PATH)")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    other = identify(state)
    if other is not None and other != name:  # the other model's checkpoint, whole: the flag fixes it
        raise CheckpointError(f"{path} is a {TITLES[other]} checkpoint, but the model is "
                              f"{title}: use --model {other} (or its lines in main.py)")
    if essential(shapes) != essential(expected) or any(shapes[k] != v for k, v in expected.items() if k in shapes):
        raise CheckpointError(f"{path} does not fit {title}: {_differences(shapes, expected)}"
                              + _kind_hint(shapes))
    bad, total = _non_finite(state, loading=True)
    if bad:
        overflowed = [k for k, v in state.items() if v.dtype == torch.float16 and v.isinf().any()]
        if overflowed and not any(v.is_floating_point() and v.isnan().any() for v in state.values()):
            raise CheckpointError(f"{path} holds infinite weights ({overflowed[0]!r} and {len(overflowed) - 1} more): "
                                  "they overflowed float16 when it was saved in half precision (the shipped weights "
                                  "are scaled far past float16's range); save in float32 or bf16 instead")
        raise CheckpointError(f"{path} holds NaN or infinite weights ({bad} of {total} tensors); it cannot be "
                              "fine-tuned or tested; use another checkpoint (the run that saved it had diverged)")
    # load_state_dict copies into the existing float32 tensors, so half-precision files load as float32;
    # a missing num_batches_tracked (files of PyTorch 0.4 and older) stays the model's own count
    missing = set(expected) - set(shapes)
    model.load_state_dict(state, strict=not missing)
    return state


def _differences(shapes, expected, most=3):
    """Which layers of a state dict differ from the model's, with expected against found shapes."""
    missing = sorted(essential(expected) - shapes.keys())
    unexpected = sorted(shapes.keys() - expected.keys())
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    said = ([f"{k} is {shapes[k]}, the model's {expected[k]}" for k in wrong] + [f"{k} {expected[k]} is missing"
            for k in missing[:most]] + [f"{k} {shapes[k]} is not in the model" for k in unexpected[:most]])[:most]
    counts = ', '.join(f'{n} {what}' for n, what in ((len(wrong), 'of other shapes'), (len(missing), 'missing'),
                                                      (len(unexpected), 'unexpected')) if n)
    return f"{counts} ({'; '.join(said)}{'; ...' if len(said) < len(wrong) + len(missing) + len(unexpected) else ''})"


def _kind_hint(shapes):
    """What kind of network a state dict that fits neither model is, when that is clear, and what to do."""
    if resembles(shapes) == 'vgg16' or any(k.startswith('features.') for k in shapes):
        if any(k.startswith('features.') and k.endswith('running_mean') for k in shapes):
            return ("; it is a VGG16 with BatchNorm in its features (like vgg16_bn), and the assignment's VGG16 "
                    "has none: use a checkpoint of the assignment's vgg16(), e.g. the shipped one")
        return ("; it is another VGG16 (an ImageNet one, or a 4096-wide head), and the assignment's has a "
                "512-wide CIFAR head: use a checkpoint of the assignment's vgg16(), e.g. the shipped one")
    return '; use a checkpoint saved from this model: torch.save(model.state_dict(), PATH)'



def _not_plain(value):
    """What is odd about a state dict entry ('a sparse tensor', ...), or '' for a dense tensor of numbers."""
    if not isinstance(value, torch.Tensor):
        return f'a {type(value).__name__}'
    if value.layout != torch.strided:
        return 'a sparse tensor'
    if value.is_quantized:
        return 'a quantized tensor'
    if value.is_meta:
        return 'a meta tensor (shapes without weights)'
    return ''


def _non_finite(state, loading=False):
    """(how many of the state dict's tensors hold NaN or infinity, how many tensors it has).

    `loading`: an infinite BatchNorm running variance is let through, since such a model still tests
    (the channel gives its bias) and main.py names it (guards.check_batch_size: no batch size is safe)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    bad = 0
    for k, v in tensors.items():
        if not v.is_floating_point() or v.layout != torch.strided or v.is_meta:
            continue
        if loading and str(k).endswith('running_var'):
            bad += bool(v.isnan().any())
        else:
            bad += not bool(torch.isfinite(v).all())
    return bad, len(tensors)


def load_either(path, missing_hint, otherwise):
    """(name, model) for a checkpoint of either assignment model, loaded; or a CheckpointError,
    `otherwise` saying what to do when the file holds some other network."""
    state = read_state_dict(path, missing_hint=missing_hint)
    name = identify(state)
    if name is None:
        raise CheckpointError(f'{path} is neither a VGG16 nor a ResNet50_layer4 checkpoint; {otherwise}')
    model = MODELS[name]()
    load_checkpoint(model, path, state)
    return name, model


def read_training_state(path):
    """What train.py saved after an epoch (weights, optimizer, schedule, generators), or a CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"training state not found: {path}; train.py writes it after every epoch "
                              "(OUT.state unless --state is given)")
    try:
        with open(path, 'rb') as f:
            zipped = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror or e}); make it readable") from None
    if zipped:
        _check_archive(path, *_any_weights_size())
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing here
        raise CheckpointError(f"{path} is damaged or not train.py's state{_why(e)}; "
                              "start the run again without --resume") from None
    if not isinstance(state, dict) or not {'args', 'epoch', 'model', 'optimizer'} <= state.keys():
        raise CheckpointError(f"{path} is not train.py's training state; pass the file named OUT.state")
    return state


def _portable(obj):
    """Tensors as contiguous CPU copies (a GPU's channels_last tensors do not load on a CPU-only machine)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().contiguous()
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    return obj


def _temp_beside(path):
    """A new temporary file in `path`'s folder (so that os.replace is a rename), with the usual permissions.

    The temporary files a killed save of the same file left there (older than STALE_TEMP_SECONDS, so
    never one a save running now beside this one is still writing) are removed first."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    prefix = '.' + os.path.basename(path) + '.'
    for name in os.listdir(folder):
        left = os.path.join(folder, name)
        try:
            if (name.startswith(prefix) and name.endswith('.tmp') and len(name) == len(prefix) + 8 + 4
                    and time.time() - os.path.getmtime(left) > STALE_TEMP_SECONDS):
                os.remove(left)
        except OSError:
            pass  # gone already, or not ours to remove
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix='.tmp', dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp makes files private (0600): give the usual permissions. os.chmod by name, not os.fchmod,
    # which Windows Python has only from 3.13 (there it sets only the read-only flag, as here)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def write_atomic(path, write):
    """Write `path` whole or not at all: `write(file)` fills a temporary file beside it, which is then
    renamed into place; a failure (a full disk too) leaves the old file as it was, and no temporary file."""
    # the real path: the file the guard checked is the file written, whatever links the path goes through
    target = os.path.realpath(path)
    tmp = None
    try:
        fd, tmp = _temp_beside(target)
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, target)
        tmp = None
        SAVED.append(path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        if _interrupted(e):  # torch's writer turns a Ctrl-C in the middle of it into a RuntimeError too
            raise KeyboardInterrupt from None
        why = e.strerror if isinstance(e, OSError) and e.strerror else reason(e)
        raise CheckpointError(f"cannot write {path} ({why}); free some space or choose another --out") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _interrupted(error):
    """True when `error` was raised while handling a KeyboardInterrupt (Ctrl-C)."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__context__
    return False


def _write(obj, path):
    write_atomic(path, lambda f: torch.save(_portable(obj), f))


def refuse_shipped(path):
    """A CheckpointError when `path`, once symlinks and `..` are resolved, is in the project's checkpoints/
    folder, is a checkpoint listed in a SHA256SUMS beside it, or is a SHA256SUMS."""
    real = os.path.realpath(path)
    named = path if real == os.path.abspath(path) else f"{path} (that is {real})"
    if os.path.basename(real) == SUMS:
        raise CheckpointError(f"will not overwrite {named}: it lists the shipped checkpoints' sha256 sums; "
                              "choose another --out")
    if shipped_sum(real) is not None:
        raise CheckpointError(f"will not overwrite the shipped checkpoint {named}; choose another --out "
                              "(maintainers replace one with python -m tools.ship_checkpoint)")
    if paths.inside(real, SHIPPED_FOLDER):
        raise CheckpointError(f"will not write {named}: {SHIPPED_FOLDER} holds only the shipped checkpoints; "
                              "choose another --out (maintainers add one with python -m tools.ship_checkpoint)")


def refuse_non_finite(obj, path):
    """Nothing is saved from a run that diverged: a CheckpointError when the weights hold NaN or infinity."""
    weights = obj.get('model') if isinstance(obj, dict) and isinstance(obj.get('model'), dict) else obj
    bad, total = _non_finite(weights) if isinstance(weights, dict) else (0, 0)
    if bad:
        raise CheckpointError(f"{path} not saved: {bad} of {total} tensors hold NaN or infinity (the run diverged); "
                              "a file already there is as it was; use a smaller --lr")


def save_checkpoint(obj, path):
    """Write `obj` (a state dict, or train.py's state, whose 'model' is one) to `path` atomically;
    never into checkpoints/ or over a shipped checkpoint, never weights that hold NaN or infinity."""
    refuse_shipped(path)
    refuse_non_finite(obj, path)
    _write(obj, path)


def ship_checkpoint(state_dict, path):
    """Write `state_dict` to `path` and list its sha256 in SHA256SUMS beside it: how a shipped checkpoint is made.

    Both files or neither: the new SHA256SUMS is made and both are written to temporary files first,
    and only then renamed into place (two renames in one folder, the last steps); a failure before
    that removes the temporary files and leaves both old files as they were."""
    refuse_non_finite(state_dict, path)
    target = os.path.realpath(path)
    sums = os.path.join(os.path.dirname(target), SUMS)
    listed = read_sums(os.path.dirname(target))  # a damaged SHA256SUMS stops here, before anything is written
    temps, replaced = [], False
    try:
        fd, tmp = _temp_beside(target)
        temps.append(tmp)
        with os.fdopen(fd, 'wb') as f:
            torch.save(_portable(state_dict), f)
        listed[os.path.basename(target)] = sha256(tmp)
        fd, tmp_sums = _temp_beside(sums)
        temps.append(tmp_sums)
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.writelines(f'{digest}  {name}\n' for name, digest in sorted(listed.items()))
        os.replace(tmp, target)
        replaced = True
        os.replace(tmp_sums, sums)
        SAVED.append(path)
    except OSError as e:
        state = (f"{path} is the new one but {sums} is not: run python -m tools.ship_checkpoint again"
                 if replaced else "both files are as they were")
        raise CheckpointError(f"cannot write {path} and its {SUMS} line ({e.strerror or e}); {state}") from None
    finally:
        for left in temps:
            if os.path.exists(left):  # a temporary file not renamed into place
                os.remove(left)
