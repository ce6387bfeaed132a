"""Checkpoint I/O for main.py, train.py, the tools and the tests.

A checkpoint is the assignment's plain state dict (`torch.save(model.state_dict())`).
Loading reads weights only (no pickled code runs), checks shipped files against
SHA256SUMS beside them, and says in one line what is wrong with a bad file.
Saving writes contiguous CPU tensors (so that a GPU run's checkpoint loads with
the course's plain `torch.load(PATH)` anywhere) to a temporary file and renames
it into place, so an interrupted save never leaves half a file. `save_checkpoint`
never replaces a shipped checkpoint; `ship_checkpoint` is the one way to, and
it updates SHA256SUMS.
"""
import hashlib
import os
import pickle
import tempfile
import zipfile

import torch

from helpers.model_table import TITLES, name_of, state_shapes, title_of

SUMS = 'SHA256SUMS'
LFS_MAGIC = b'version https://git-lfs'
SAVED = []  # every file written by this process, for the Ctrl-C message


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def shipped_sum(path):
    """The sha256 that SHA256SUMS beside `path` lists for it, or None."""
    sums = os.path.join(os.path.dirname(os.path.abspath(path)), SUMS)
    if not os.path.isfile(sums):
        return None
    with open(sums) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip('*') == os.path.basename(path):
                return parts[0].lower()
    return None


def read_state_dict(path, missing_hint='pass --checkpoint PATH, or make one with train.py (see README)'):
    """The state dict in `path`, read as weights only, or a CheckpointError (`missing_hint`: what to do
    when there is no such file, in the words of the command that was run)."""
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
    with open(path, 'rb') as f:
        head = f.read(len(LFS_MAGIC))
    if head == LFS_MAGIC:
        raise CheckpointError(f"{path} is a Git LFS pointer, not the checkpoint itself; "
                              "fetch the real file with `git lfs pull` (or download it again)")
    expected = shipped_sum(path)
    if expected is not None and sha256(path) != expected:
        raise CheckpointError(f"{path} does not match its line in {SUMS} (damaged or changed); "
                              f"restore it with `git checkout -- {path}`")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'Unsupported global' in str(e):  # e.g. torch.save(model): a class or function to call
            raise CheckpointError(f"refused to load {path}: it holds pickled code or objects, not just "
                                  "weights, and loading it could run that code; save a plain state dict: "
                                  "torch.save(model.state_dict(), PATH)") from None
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint{_why(e)}; "
                              "download or copy it again") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is damaged or truncated{_why(e)}; "
                              "download or copy it again") from None
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']  # a common wrapper around the same thing
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(state).__name__}); "
                              "save one with torch.save(model.state_dict(), PATH)")
    # DistributedDataParallel and torch.compile add these prefixes to every key
    for prefix in ('module.', '_orig_mod.'):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _why(e):
    """torch.load's failure as ' (first line)', or '' for the weights-only unpickler's, which is
    advice to load the file unsafely whatever the file is (a text file gets it too), not a reason."""
    if isinstance(e, pickle.UnpicklingError):
        return ''
    return f" ({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})"


def load_checkpoint(model, path, state=None):
    """Load `path` into `model` (strictly, cast to the model's dtypes) or raise CheckpointError.

    `state`: what read_state_dict(path) returned, when the caller has read it already."""
    state = read_state_dict(path) if state is None else state
    name = name_of(model)
    title = title_of(model)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    expected = model.state_dict()
    if shapes.keys() != expected.keys():
        for other in TITLES:
            if other != name and shapes.keys() == state_shapes(other).keys():
                raise CheckpointError(f"{path} is a {TITLES[other]} checkpoint, but the model is "
                                      f"{title}: use --model {other} (or its lines in main.py)")
        missing = sorted(expected.keys() - shapes.keys())
        unexpected = sorted(shapes.keys() - expected.keys())
        raise CheckpointError(f"{path} does not fit {title}: {len(missing)} keys missing "
                              f"{missing[:2]}, {len(unexpected)} unexpected {unexpected[:2]}")
    wrong = [k for k, v in expected.items() if tuple(v.shape) != shapes[k]]
    if wrong:
        raise CheckpointError(f"{path} does not fit {title}: {len(wrong)} tensors have other shapes, "
                              f"e.g. {wrong[0]} is {shapes[wrong[0]]}")
    # load_state_dict copies into the existing float32 tensors, so half-precision files load as float32
    model.load_state_dict(state, strict=True)
    return state


def read_training_state(path):
    """What train.py saved after an epoch (weights, optimizer, schedule, generators), or a CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"training state not found: {path}; train.py writes it after every epoch "
                              "(OUT.state unless --state is given)")
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


def _write(obj, path):
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes files private (0600); give the usual permissions
        with os.fdopen(fd, 'wb') as f:
            torch.save(_portable(obj), f)
        os.replace(tmp, path)
        tmp = None
        SAVED.append(path)
    except OSError as e:
        raise CheckpointError(f"cannot write {path} ({e.strerror or e}); choose another --out") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def refuse_shipped(path):
    """A CheckpointError when `path` is a shipped checkpoint (listed in SHA256SUMS beside it)."""
    if shipped_sum(path) is not None:
        raise CheckpointError(f"will not overwrite the shipped checkpoint {path}; choose another --out "
                              "(maintainers replace one with python -m tools.ship_checkpoint)")


def save_checkpoint(obj, path):
    """Write `obj` (a state dict, or train.py's state) to `path` atomically; never over a shipped checkpoint."""
    refuse_shipped(path)
    _write(obj, path)


def ship_checkpoint(state_dict, path):
    """Write `state_dict` to `path` and list its sha256 in SHA256SUMS beside it: how a shipped checkpoint is made."""
    _write(state_dict, path)
    sums = os.path.join(os.path.dirname(os.path.abspath(path)), SUMS)
    lines = []
    if os.path.isfile(sums):
        with open(sums) as f:
            lines = [line for line in f if line.split()[1:2] != [os.path.basename(path)]
                     and line.split()[1:2] != ['*' + os.path.basename(path)]]
    lines.append(f'{sha256(path)}  {os.path.basename(path)}\n')
    with open(sums + '.tmp', 'w') as f:
        f.writelines(sorted(lines, key=lambda line: line.split()[1]))
    os.replace(sums + '.tmp', sums)
