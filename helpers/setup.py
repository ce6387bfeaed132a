"""What main.py does before its loop, in one call, and the check that stops a fine-tune that diverged."""
import contextlib
import math
import os
from types import SimpleNamespace

import torch
import torch.nn as nn

from helpers import data, devices, fast_path
from helpers.checkpoints import load, name_of, title_of
from helpers.errors import Mistake
from helpers.weight_scaling import largest_safe_batch


def prepare(model, PATH, data_dir, batch_size, device, seed=None, eval_only=False, plain=False, bf16='auto'):
    """The run's model (loaded, on `device`), loaders, autocast and Adam options, and a line describing them."""
    if seed is not None:
        torch.manual_seed(seed)
    title, own = title_of(model), name_of(model) is None
    if PATH is None or (own and not os.path.exists(PATH)):  # a network of the student's own may start afresh
        print(f'note: {"PATH is None" if PATH is None else f"no checkpoint at {PATH}"}, so {title} starts from '
              'random weights')
        PATH = None
    else:
        load(model, PATH)
    if own:
        check_outputs(model, title)
    if not eval_only:
        check_batch_size(model, batch_size)
    if plain:  # the assignment's pipeline: PIL transforms per image, float32
        train_loader, test_loader = data.plain_loaders(data_dir, batch_size, train=not eval_only)
        autocast, adam_options, model = contextlib.nullcontext(), {}, model.to(device)
    else:
        train_loader, test_loader = data.tensor_loaders(data_dir, batch_size, device, seed, train=not eval_only,
                                                        channels_last=fast_path.channels_last(model, device))
        autocast = devices.autocast(device, bf16=bf16 == 'auto')
        adam_options = fast_path.adam_options(device)
        model = fast_path.prepare(model, device, bf16=isinstance(autocast, torch.autocast))
    train_images = len(train_loader.dataset) if train_loader else 0
    precision = devices.precision(autocast, device)
    print(f'{name_of(model) or title} from {PATH or "random weights"} on {device}, {precision}; {train_images} '
          f'training and {len(test_loader.dataset)} test images from {data_dir}'
          + (' (plain pipeline)' if plain else ''))
    return SimpleNamespace(model=model, train_loader=train_loader, test_loader=test_loader, autocast=autocast,
                           adam_options=adam_options, precision=precision, checkpoint=PATH, train_images=train_images)


def check_outputs(model, title):
    """A network of the student's own must give ten scores (one per class) for a batch of 32x32 RGB images."""
    was_training = model.training
    try:
        with torch.no_grad():
            shape = tuple(model.eval()(torch.zeros(2, 3, 32, 32)).shape)
    except Exception as e:  # noqa: BLE001 - whatever a student's forward raises, in one line
        raise Mistake(f'{title} fails on a batch of two 32x32 RGB images ({type(e).__name__}: '
                      f'{str(e).strip()[:200]}); fix its forward') from None
    finally:
        model.train(was_training)
    if shape != (2, 10):
        raise Mistake(f'{title} gives outputs of shape {shape} for 2 images; CIFAR-10 needs (2, 10), one score per '
                      'class: end the network with a layer of 10 outputs, e.g. nn.Linear(..., 10)')


def check_batch_size(model, batch_size):
    """BatchNorm trains on each batch's statistics: one image has none; huge ones overflow the scaled VGG16's."""
    if batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise Mistake('--batch-size 1 cannot fine-tune a network with BatchNorm (the statistics of one image '
                      'replace what it learnt); use 2 or more, the assignment uses 100')
    limit = largest_safe_batch(model)
    if limit is not None and batch_size > limit:
        raise Mistake(f'--batch-size {batch_size} is too large for this checkpoint: its weights are scaled up (see '
                      f'the README) and BatchNorm over more than {limit} images would overflow float32; use '
                      f'--batch-size {limit} or less')


DIVERGED = 10 * math.log(10)  # ten times the loss of guessing among ten classes


def stop_if_diverged(step_losses, lr):
    """Stop before anything is saved; called where the loss is printed anyway, so a GPU does not wait every step."""
    recent = torch.stack(step_losses[-100:]).float().mean()
    if not torch.isfinite(recent) or recent > DIVERGED:
        raise Mistake(f'the fine-tune diverged (the loss averaged {recent.item():.4g} over the last steps; guessing '
                      f'gives {math.log(10):.2f}) with learning rate {lr:g}; the model was not saved; use a smaller '
                      '--lr (the assignment uses 0.001)')


def print_per_class(confusion):
    """Each class's test accuracy, from the confusion matrix (rows: true class)."""
    for i, name in enumerate(data.CLASSES):
        print(f'  {name:>10}: {100 * confusion[i, i].item() / max(confusion[i].sum().item(), 1):5.1f} %')
