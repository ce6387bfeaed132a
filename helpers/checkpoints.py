"""Checkpoints: the assignment's plain state dicts, read by torch's weights-only unpickler out of the usual wrappers,
checked against SHA256SUMS, said in one line where they do not fit; saved whole or not at all, never with NaN."""
import functools
import hashlib
import io
import os
import pickle
import re
import zipfile

import torch
import torch.nn as nn

from helpers import paths
from helpers.errors import Mistake
from resnet50_full import ResNet50_layer4
from vgg16_full import VGG, vgg16

MODELS = {'resnet50': ResNet50_layer4, 'vgg16': vgg16}
PRETRAINED = {'resnet50': './checkpoints/resnet50_cifar10.ckpt', 'vgg16': './checkpoints/vgg16_cifar10.ckpt'}
TITLES = {'resnet50': 'ResNet50_layer4', 'vgg16': 'VGG16'}
SUMS = 'SHA256SUMS'
HINT = 'pass --checkpoint PATH, or make one with train.py (see the README)'


def shapes(state):  # without num_batches_tracked, which PyTorch 0.4's files lack
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith('num_batches_tracked')}


@functools.lru_cache(maxsize=None)
def _model_shapes(name):
    with torch.device('meta'):  # shapes without allocating weights
        return shapes(MODELS[name]().state_dict())


def identify(state):
    """'resnet50' or 'vgg16' for a state dict of that model (keys and shapes, under any key prefix), else None."""
    return next((n for n in MODELS if shapes(_fit(state, _model_shapes(n).keys())) == _model_shapes(n)), None)


def unwrap(model):  # the network in (Distributed)DataParallel's .module or in torch.compile's ._orig_mod
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) or hasattr(model, '_orig_mod'):
        model = model._orig_mod if hasattr(model, '_orig_mod') else model.module
    return model


def name_of(model):
    """'resnet50' or 'vgg16' for the assignment's models, wrapped or not; None for any other network."""
    model = unwrap(model)
    return identify(model.state_dict()) if isinstance(model, (ResNet50_layer4, VGG)) else None


def title_of(model):  # for messages
    return TITLES.get(name_of(model)) or type(unwrap(model)).__name__


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def listed_sum(path):
    """The sha256 that the SHA256SUMS beside `path` lists for it (however the path is spelt), or None."""
    folder = os.path.dirname(os.path.realpath(path))
    try:
        with open(os.path.join(folder, SUMS), encoding='utf-8-sig') as f:  # an editor may add a BOM
            lines = [line.split(None, 1) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    return next((digest.lower() for digest, name in lines
                 if paths.same(os.path.join(folder, name.strip().lstrip('*')), path)), None)


# Files students bring that torch.save did not write, by how they begin (for a zip, its names); each has a test
FORMATS = [
    (rb'\Aversion https://git-lfs', 'is a Git LFS pointer, not the checkpoint (a clone made without Git LFS): '
                                   'run `git lfs pull` in the clone, with Git LFS installed'),
    (rb'(?s)\A.{6}\0\0\{', 'is a safetensors file: torch.save(safetensors.torch.load_file(FILE), PATH) converts it '
                           '(pip install safetensors), or save a state dict: torch.save(model.state_dict(), PATH)'),
    (rb'(?m)/constants\.pkl$', 'is a TorchScript archive (torch.jit.save), not a state dict: save its weights with '
                             'torch.save(torch.jit.load(FILE).state_dict(), PATH)'),
]


def read(path, hint=HINT, data=None):
    """The dicts of weights (usually one) in checkpoint `path`, or in `data`, its bytes; or a Mistake."""
    expected = None if data is not None else listed_sum(path)
    if data is None:
        if os.path.isdir(path):
            raise Mistake(f'{paths.shown(path)} is a folder; give a checkpoint file in it')
        if not os.path.isfile(path):
            raise paths.missing(path, 'checkpoint', hint)
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise Mistake(f'cannot read {paths.shown(path)} ({e.strerror}); give a file you may read') from None
    try:  # how the file begins: for a zip (torch.save's format too) the names in it, else its first bytes
        begins = '\n'.join(zipfile.ZipFile(io.BytesIO(data)).namelist()).encode()
    except Exception:  # noqa: BLE001 - not a zip, or a damaged one
        begins = data[:64]
    for pattern, what in FORMATS:
        if re.search(pattern, begins):
            raise Mistake(f'{path} {what}')
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise Mistake(f'{path} differs from the shipped file listed in {SUMS} (changed or damaged): to use it as your '
                      f'own, move it elsewhere, e.g. to outputs/mine.ckpt, and pass --checkpoint outputs/mine.ckpt; '
                      f'after the move, `git checkout -- {path}` (or a fresh clone) gives the shipped file back')
    try:
        state = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any file that torch cannot read as weights
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - not a zip checkpoint at all
            unsafe = []
        if unsafe:
            raise Mistake(f'refused to load {path}: it holds pickled code or objects ({unsafe[0]}), not just weights, '
                          'and loading it could run that code; save a plain state dict: '
                          'torch.save(model.state_dict(), PATH)') from None
        # torch's advice to load with weights_only=False is never a reason to show
        text = re.sub(r'\[enforce fail at .*?\] \.? ?', '', ' '.join(str(e).split()))[:160] or type(e).__name__
        why = '' if isinstance(e, pickle.UnpicklingError) or 'weights_only' in text else f' ({text})'
        raise Mistake(f'{path} is not a PyTorch checkpoint, or is damaged{why}; download or copy it again') from None
    return _candidates(state, path)


def _is_weights(value):
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _candidates(state, path):
    """The dicts of tensors in what torch.load gave: itself, or its entries ('state_dict' first; a model beside
    its EMA copy gives both, and `load` takes the one that fits)."""
    if isinstance(state, dict) and {'args', 'epoch', 'history', 'model', 'optimizer'} <= state.keys():
        raise Mistake(f"{path} is train.py's training state, not a checkpoint; pass the checkpoint train.py wrote, "
                      f"or go on training with python train.py --resume {path}")
    if _is_weights(state):
        return [state]
    found = [v for v in state.values() if _is_weights(v)] if isinstance(state, dict) else []
    if found:
        return sorted(found, key=lambda v: v is not state.get('state_dict'))
    what = (f"a dict of {', '.join(map(repr, list(state)[:5]))}" if isinstance(state, dict)
            else f'a {type(state).__name__}')
    raise Mistake(f'{path} is not a state dict (it holds {what}); save one with torch.save(model.state_dict(), PATH)')


def _fit(state, wanted):
    """`state` with a prefix every key has (module., _orig_mod., model., ...) taken off, while that fits `wanted`."""
    stripped = state
    while shapes(stripped).keys() != wanted:
        first = next(iter(stripped)).split('.', 1)[0] + '.'
        if not all(k.startswith(first) and len(k) > len(first) for k in stripped):
            return state
        stripped = {k[len(first):]: v for k, v in stripped.items()}
    return stripped


def load(model, path, state=None):
    """Load checkpoint `path` (or `state`, what read(path) gave) into `model`; or a Mistake that says what to do."""
    model = unwrap(model)
    expected = shapes(model.state_dict())
    fitted = [_fit(c, expected.keys()) for c in (read(path) if state is None else state)]
    state = next((c for c in fitted if shapes(c) == expected), fitted[0])
    if shapes(state) != expected:
        raise Mistake(_mismatch(path, state, model, expected))
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise Mistake(f'{path} holds NaN or infinite weights (the run that saved it diverged, or it was saved in '
                      'float16, whose range the shipped weights exceed); use another checkpoint')
    model.load_state_dict(state, strict=False)  # shapes match; a missing num_batches_tracked keeps the model's
    return state


def _mismatch(path, state, model, expected):
    """What to do about a checkpoint that does not fit the model, in words that keep the person's choice."""
    other, mine, title = identify(state), name_of(model), title_of(model)
    fix = (f'set PATH = None in main.py to start {title} from random weights, or give a checkpoint saved from it'
           if mine is None else f'point PATH (or --checkpoint) at a {title} checkpoint, e.g. {PRETRAINED[mine]}')
    if other is not None:
        return f'{path} is a {TITLES[other]} checkpoint, and the model is {title}: {fix}, or choose {TITLES[other]}'
    found = shapes(state)
    said = [f'{k} is {found.get(k, "missing")}, the model\'s {s}' for k, s in expected.items() if found.get(k) != s]
    said += [f'{k} is not in the model' for k in found if k not in expected]
    kind = ("; it has BatchNorm in its features (like vgg16_bn), which the assignment's VGG16 has not"
            if any(k.startswith('features.') and k.endswith('running_mean') for k in state) else '')
    return (f"{path} does not fit {title}: {len(said)} tensors differ ({'; '.join(said[:3])}"
            f"{'; ...' if len(said) > 3 else ''}){kind}; {fix}")


def load_either(path, hint):
    """(name, model) for a checkpoint of either assignment model, loaded, or a Mistake."""
    state = read(path, hint)
    name = next(filter(None, map(identify, state)), None)
    if name is None:
        raise Mistake(f'{path} is neither a VGG16 nor a ResNet50_layer4 checkpoint; {hint}')
    model = MODELS[name]()
    load(model, path, state)
    return name, model


def _portable(obj):  # contiguous CPU tensors: a GPU's channels_last checkpoint loads anywhere
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().contiguous()
    return {k: _portable(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def save(obj, path):
    """Save `obj` (a state dict, or train.py's state whose 'model' is one) unless its weights hold NaN."""
    weights = obj.get('model', obj) if isinstance(obj, dict) else obj
    if any(isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
           for v in weights.values()):
        raise Mistake(f'{path} not saved: the weights hold NaN or infinity (the run diverged); use a smaller --lr')
    paths.write_atomic(path, lambda f: torch.save(_portable(obj), f))
