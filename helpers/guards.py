"""Checks that stop a run early, in one line, before it wastes time or saves
something wrong: outputs that cannot be written, batches too large for a
scaled checkpoint, and a fine-tune that diverged."""
import math
import os
import tempfile

from helpers import paths
from helpers.errors import UsageError, reason


def check_output(path, flag, folder=False):
    """Stop with one line, before any work, when `path` (a checkpoint file, or with `folder` a folder)
    cannot be written: otherwise the mistake shows only after the epochs whose result it was to keep."""
    from helpers.checkpoints import is_checkpoint_file, refuse_shipped
    path = os.fspath(path)
    if not folder:
        if os.path.isdir(path) or path.endswith(('/', os.sep)):
            raise UsageError(f"{flag} {path} names a folder; give a file name in it, "
                             f"e.g. {flag} {os.path.join(path, 'model.ckpt')}")
        refuse_shipped(path)
        if os.path.isfile(path) and not is_checkpoint_file(path):  # a tab-completed model.py, say
            raise UsageError(f"{flag} {path} is a file that is not a checkpoint, and {flag} replaces only a "
                             f"checkpoint; choose another name, e.g. {flag} outputs/model.ckpt")
    elif os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a folder (it is made when missing)")
    # the folders still to be made go where the nearest existing one is
    place = paths.nearest_existing(path if folder else os.path.dirname(os.path.abspath(path)))
    if place is None:  # not even its root: a drive letter with nothing mounted, an unplugged disk
        raise UsageError(f"{flag} {path}: {os.path.splitdrive(os.path.abspath(path))[0] or '/'} is not there "
                         f"(no drive or disk mounted there?); choose another {flag}")
    if not os.path.isdir(place):
        raise UsageError(f"{flag} {path}: {place} is a file, not a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write in {place} ({e.strerror or e}); choose another {flag}") from None


def check_batch_size(model, batch_size):
    """Stop with one line when fine-tuning `model` in batches of `batch_size` would overflow its BatchNorm."""
    from helpers.weight_scaling import largest_safe_batch
    limit = largest_safe_batch(model)
    if limit is not None and limit < 1:  # saved after a fine-tune that overflowed, or damaged
        raise UsageError("this checkpoint cannot be fine-tuned at any batch size: a BatchNorm's running variance is "
                         "at the edge of float32 (or past it), so training statistics would overflow; use --eval-only, "
                         "or fine-tune the shipped checkpoint")
    if limit is not None and batch_size > limit:
        raise UsageError(f"--batch-size {batch_size} is too large for this checkpoint: its weights are scaled up "
                         f"to survive the Adam epoch (see the README), and BatchNorm's statistics over more than "
                         f"{limit} images would overflow float32; use --batch-size {limit} or less")


def check_outputs(model, name):
    """Stop with one line when a student's own network does not give ten scores per image (one per
    CIFAR-10 class), or fails on a batch of CIFAR-10's shape: before the data, not in the test pass."""
    import torch
    was_training = model.training
    try:
        with torch.no_grad():
            shape = tuple(model.eval()(torch.zeros(2, 3, 32, 32)).shape)
    except Exception as e:  # noqa: BLE001 - whatever a student's forward raises, said in one line
        raise UsageError(f'{name} fails on a batch of two 32x32 RGB images ({type(e).__name__}: '
                         f'{reason(e)}); fix its forward') from None
    finally:
        model.train(was_training)
    if shape != (2, 10):
        raise UsageError(f'{name} gives outputs of shape {shape} for 2 images; CIFAR-10 needs (2, 10), one score '
                         'per class: end the network with a layer of 10 outputs, e.g. nn.Linear(..., 10)')


DIVERGED = 10 * math.log(10)  # ten times the loss of guessing uniformly among ten classes


def stop_if_diverged(step_losses, lr):
    """Stop with one line, before anything is saved, once the fine-tune has diverged: the
    mean loss of the last 100 steps is not a number, or above ten times that of guessing.

    Called where the loss is printed anyway, so the GPU is not made to wait every step."""
    import torch
    recent = torch.stack(step_losses[-100:]).float().mean()
    if torch.isfinite(recent) and recent <= DIVERGED:
        return
    losses = torch.stack(step_losses).float()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        what = f'the loss became {losses[bad[0]].item()} at step {int(bad[0]) + 1}'
    else:
        what = (f'the loss averaged {recent.item():.4g} over steps {max(len(losses) - 99, 1)}-{len(losses)} '
                f'(guessing gives {math.log(10):.2f})')
    raise UsageError(f'the fine-tune diverged: {what}, with learning rate {lr:g}; the model was not saved; '
                     'use a smaller --lr (the assignment uses 0.001)')
