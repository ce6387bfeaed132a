"""What main.py does before its loop, in one call, and the check that stops a fine-tune that diverged."""
import math
import os
from types import SimpleNamespace

import torch
import torch.nn as nn

from helpers import data, devices, fast_path, settings
from helpers.checkpoints import load, name_of, title_of
from helpers.errors import Mistake
from helpers.weight_scaling import largest_safe_batch


def prepare(model, PATH, train_loader, test_loader, device, out=None, seed=None, eval_only=False, plain=False,
            bf16='auto', num_epochs=1, report=None):
    """The run's model (checked, loaded, on `device`), loaders, autocast, Adam options and output file, and a line
    describing them; named from the model passed here, whatever line of main.py chose it."""
    if not isinstance(device, torch.device):
        raise Mistake("main.py's line settings.apply(globals()) is missing, or below this one: put it back under "
                      "the settings (it reads the flags and checks each setting)")
    if seed is not None:
        torch.manual_seed(seed)
    PATH, out = settings.plan(model, PATH, out, eval_only, num_epochs, report)  # named from this model
    name, title = name_of(model), title_of(model)
    if PATH is None or (name is None and not os.path.exists(PATH)):  # a network of the student's own may start afresh
        print(f'note: {"PATH is None" if PATH is None else f"no checkpoint at {PATH}"}, so {title} starts from '
              'random weights')
        PATH = None
    else:
        load(model, PATH)
    if name is None:
        check_outputs(model, title)
    if settings.CHOSEN and (settings.CHOSEN[1] != PATH or settings.CHOSEN[0] not in (None, model)):
        raise Mistake('main.py sets model or PATH again below settings.apply(globals()), which --model and '
                      '--checkpoint replace: move those lines up under "Choose model", or leave out the flag')
    where = getattr(test_loader.dataset, 'data_dir', None)
    autocast = devices.autocast(device, bf16=not plain and bf16 == 'auto')
    last = not plain and fast_path.channels_last(model, device)
    train_loader = None if eval_only else fast_path.loader(train_loader, True, device, seed, last, plain)
    test_loader = fast_path.loader(test_loader, False, device, seed, last, plain)
    if not eval_only:
        check_batch_size(model, train_loader)
    model = model.to(device) if plain else fast_path.prepare(model, device, bf16=isinstance(autocast, torch.autocast))
    train_images = len(train_loader.dataset) if train_loader else 0
    precision = devices.precision(autocast, device)
    print(f'{name or title} from {PATH or "random weights"} on {device}, {precision}; {train_images} training and '
          f'{len(test_loader.dataset)} test images' + f' from {where}' * bool(where) + ' (plain pipeline)' * plain)
    return SimpleNamespace(model=model, train_loader=train_loader, test_loader=test_loader, autocast=autocast,
                           adam_options={} if plain else fast_path.adam_options(device), precision=precision,
                           checkpoint=PATH, train_images=train_images, out=out, name=name or title, data_dir=where,
                           batch_size=train_loader.batch_size if train_loader else test_loader.batch_size)


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


def check_batch_size(model, loader):
    """BatchNorm trains on each batch's statistics: one image has none; huge ones overflow the scaled VGG16's."""
    batch_size, norm = loader.batch_size, any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if norm and batch_size < 2:
        raise Mistake('--batch-size 1 cannot fine-tune a network with BatchNorm (the statistics of one image '
                      'replace what it learnt); use 2 or more, the assignment uses 100')
    if norm and len(loader.dataset) % batch_size == 1 and not getattr(loader, 'drop_last', True):
        raise Mistake(f'the last training batch would hold one image ({len(loader.dataset)} images, batch '
                      f'{batch_size}), on which BatchNorm cannot train: use another batch size, or drop_last=True')
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
