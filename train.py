"""Train VGG16 or ResNet50_layer4 on CIFAR-10 into a checkpoint that main.py loads.

    python train.py --model resnet50 --data DIR --epochs 50 --out outputs/resnet50.ckpt
    python train.py --resume outputs/resnet50.ckpt.state      # after an interruption or --stop-after

After every epoch the run is saved to OUT.state; at the end the weights are scaled for main.py's Adam epoch,
stored in half precision, tested as stored and saved (docs/training.md)."""
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from helpers import data, devices, errors, fast_path, paths
from helpers.checkpoints import MODELS, TITLES, load_either, save
from helpers.progress import progress
from helpers.settings import Parser, number, path_text
from helpers.weight_scaling import compact, fold_batchnorm, looks_scaled, scale_for_adam, unscale
from vgg16_full import VGG, cfg, make_layers

MAY_CHANGE = {'resume', 'out', 'device', 'bf16', 'stop_after'}  # with --resume; the rest are the run's own


def parse(argv):
    """(settings, the state being resumed or None)."""
    p = Parser(prog='python train.py', description=__doc__.splitlines()[0])
    p.add_argument('--model', choices=sorted(MODELS))
    p.add_argument('--data', type=path_text, metavar='DIR', default='./data', help='CIFAR-10 root or image folder')
    p.add_argument('--out', type=path_text, metavar='PATH', help='the checkpoint; the state goes to PATH.state')
    p.add_argument('--epochs', type=number(), default=30)
    p.add_argument('--batch-size', type=number(), default=128, help='images a step')
    p.add_argument('--lr', type=number(float, 1e-12), default=0.1, help='peak of the one-cycle schedule')
    p.add_argument('--momentum', type=number(float, 0, 1), default=0.9)
    p.add_argument('--weight-decay', type=number(float, 0), default=5e-4)
    p.add_argument('--label-smoothing', type=number(float, 0, 1), default=0.0)
    p.add_argument('--batch-norm', action='store_true', help='VGG16: BatchNorm after each convolution, folded away')
    p.add_argument('--holdout', type=number(int, 0), default=5000, help='validate on N kept out (0: the test split)')
    p.add_argument('--swa-from', type=number(), metavar='E', help='average the weights of epochs E to the last')
    p.add_argument('--swa-lr', type=number(float, 1e-12), metavar='LR', help="(default: the schedule's at epoch E)")
    p.add_argument('--init', type=path_text, metavar='CKPT', help='start from this trained checkpoint')
    p.add_argument('--sam', type=number(float, 1e-12), metavar='RHO', help='sharpness-aware steps (e.g. 0.05)')
    p.add_argument('--bf16', choices=['auto', 'off'], default='auto', help='auto: where the hardware has it')
    p.add_argument('--device', type=devices.device_text, default='auto', help=devices.DEVICE_HELP)
    p.add_argument('--seed', type=number(int, 0, 2 ** 63), default=0)
    p.add_argument('--resume', type=path_text, metavar='STATE', help='continue the run saved in this state')
    p.add_argument('--stop-after', type=number(), metavar='N', help='stop after N epochs (--resume goes on)')
    p.add_argument('--no-rescale', action='store_true', help='save the float32 weights as trained')
    args = p.parse_args(argv)
    if args.resume:
        return resumed_settings(args, p.given(argv))
    for wrong, why in ((not (args.model and args.out), '--model and --out are required (or --resume STATE)'),
                       (args.batch_norm and args.model != 'vgg16', '--batch-norm is for --model vgg16'),
                       (args.batch_norm and args.init, '--init goes without --batch-norm (a saved VGG16 has none)'),
                       ((args.swa_from or 0) > args.epochs, f'--swa-from {args.swa_from} is after the last epoch'),
                       (args.swa_lr and not args.swa_from, '--swa-lr goes with --swa-from')):
        if wrong:
            p.error(why)
    return args, None


def resumed_settings(args, given):
    """The settings of the run saved in --resume, and its state; a recipe flag given is a Mistake."""
    if not os.path.isfile(args.resume):
        raise paths.missing(args.resume, 'training state', 'give the OUT.state that train.py wrote beside OUT')
    try:
        state = torch.load(args.resume, map_location='cpu', weights_only=True)
        saved = state['args'] if state['args']['model'] in MODELS else None
    except Exception:  # noqa: BLE001 - not a file torch reads, or not train.py's
        saved = None
    if saved is None:
        raise errors.Mistake(f'{paths.shown(args.resume)} is not a training state train.py can continue; '
                             'start a new run')
    recipe = sorted(given - MAY_CHANGE)
    if recipe:
        raise errors.Mistake(f"--{recipe[0].replace('_', '-')}: --resume goes on with the run's own settings (only "
                             "--out, --device, --bf16 and --stop-after may be given); start a new run to change them")
    vars(args).update({**saved, **{k: getattr(args, k) for k in given | {'stop_after'}}})  # this run's --resume
    return args, state


def main():
    args, state = parse(sys.argv[1:])
    state_path = args.resume or args.out + '.state'
    errors.GO_ON[state_path] = f'python train.py --resume {state_path}'  # said by Ctrl-C too
    paths.check_output(args.out, '--out', [args.init, args.resume])  # before any work, not after hours of it
    paths.check_output(state_path, '--resume' if args.resume else '--out', [args.init], suffixes=('.state',),
                       example=None if args.resume else '--out outputs/model.ckpt')
    device = devices.pick_device(args.device)
    autocast = devices.autocast(device, bf16=args.bf16 == 'auto')
    print(f'train.py: {TITLES[args.model]}{" with BatchNorm" if args.batch_norm else ""}, '
          f'device {device}, {devices.precision(autocast, device)}, data {args.data}'
          + (f', resuming {args.resume} after epoch {state["epoch"]}' if state else ''))
    torch.manual_seed(args.seed)
    model = first_model(args, state)
    train_loader, val_loader = data.tensor_loaders(
        args.data, args.batch_size, device, args.seed, holdout=args.holdout, test_batch_size=500,
        channels_last=fast_path.channels_last(model, device))
    print(f'{len(train_loader.labels)} training images, {len(val_loader.labels)} validation images '
          + ('(held out of the training split)' if args.holdout else '(the test split)'))
    model = fast_path.prepare(model, device, bf16=isinstance(autocast, torch.autocast))
    optimizer = torch.optim.SGD(model.parameters(), args.lr, args.momentum, weight_decay=args.weight_decay,
                                nesterov=True)
    steps = args.epochs * len(train_loader)  # OneCycleLR divides by zero for a warm-up of exactly one step
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps,
                                                    pct_start=0.3 if steps == 4 else 0.25)
    average = AveragedModel(model) if args.swa_from else None
    held = None  # SWA's learning rate, from --swa-from on
    history, first = restore(state, model, optimizer, scheduler, average, train_loader, device) if state else ([], 0)
    for epoch in range(first, args.epochs):
        start, averaging = time.time(), bool(args.swa_from) and epoch + 1 >= args.swa_from
        if averaging and held is None:
            args.swa_lr = args.swa_lr or scheduler.get_last_lr()[0]  # kept in the state's settings
            held = SWALR(optimizer, args.swa_lr, anneal_epochs=0)
            print(f'from epoch {args.swa_from} on: learning rate {args.swa_lr:.4g}, weights averaged')
        lr = optimizer.param_groups[0]['lr']
        loss = train_one_epoch(args, model, train_loader, optimizer, None if averaging else scheduler, autocast,
                               f'epoch {epoch + 1}/{args.epochs}')
        if averaging:
            average.update_parameters(model)
        accuracy = evaluate(model, val_loader, autocast)
        seconds = time.time() - start
        history.append(dict(epoch=epoch + 1, train_loss=loss, val_accuracy=accuracy, lr=lr, seconds=seconds))
        print(f'epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, validation accuracy {accuracy:.2f} %, '
              f'{seconds:.0f} s')
        save(dict(args=vars(args), epoch=epoch + 1, history=history, model=model.state_dict(),  # NaN: no
                  optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=torch.get_rng_state(),
                  average=average.state_dict() if average is not None else None,
                  loader_rng=train_loader.generator.get_state(),
                  cuda_rng=torch.cuda.get_rng_state(device) if device.type == 'cuda' else None), state_path)
        if args.stop_after and epoch + 1 - first >= args.stop_after and epoch + 1 < args.epochs:
            print(f'stopped after epoch {epoch + 1} of {args.epochs}; go on: {errors.GO_ON[state_path]}')
            break
    else:  # every epoch done (resuming a finished run writes its checkpoint again)
        finish(args, model, average, train_loader, val_loader, device, autocast)


def first_model(args, state):
    """The network to train: fresh, or --init's weights at a scale SGD can train (the state's, when resuming)."""
    if args.batch_norm:
        return VGG(make_layers(cfg['D'], batch_norm=True))
    if not args.init or state:
        return MODELS[args.model]()
    name, model = load_either(args.init, 'give --init a checkpoint of the model being trained')
    if name != args.model:
        raise errors.Mistake(f'--init {args.init} is a {TITLES[name]} checkpoint, not {TITLES[args.model]}; '
                             f'give --init one of --model {args.model}')
    return unscale(model) if looks_scaled(model) else model  # scaled weights would make SGD's steps tiny


def restore(state, model, optimizer, scheduler, average, train_loader, device):
    """The saved run put back where it stopped: (its history, the epochs done)."""
    for part, key in ((model, 'model'), (optimizer, 'optimizer'), (scheduler, 'scheduler'), (average, 'average')):
        if part is not None:
            part.load_state_dict(state[key])
    torch.set_rng_state(state['rng'])
    train_loader.generator.set_state(state['loader_rng'])
    if device.type == 'cuda' and state['cuda_rng'] is not None:
        torch.cuda.set_rng_state(state['cuda_rng'], device)
    return state['history'], state['epoch']


def train_one_epoch(args, net, loader, optimizer, scheduler, autocast, desc):
    """One pass over the training images (SAM's two a step with --sam); the mean loss."""
    net.train()
    total = 0
    for images, labels in progress(loader, desc):
        def loss_now():
            with autocast:
                outputs = net(images)
                loss = F.cross_entropy(outputs, labels, label_smoothing=args.label_smoothing)
            return loss
        optimizer.zero_grad(set_to_none=True)
        loss = loss_now()
        loss.backward()
        if args.sam:
            sam_second_pass(net, loss_now, args.sam)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach()
    return total.item() / len(loader)


def sam_second_pass(net, loss_now, rho):
    """SAM (Foret et al. 2021): the gradients at the weights moved `rho` uphill (w + rho g / |g|) replace the
    first ones; the weights move back. BatchNorm keeps the first pass's statistics: the moved weights are a probe."""
    params = [p for p in net.parameters() if p.grad is not None]
    momenta = {m: m.momentum for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    weights = [p.detach().clone() for p in params]
    with torch.no_grad():
        scale = rho / (torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) + 1e-12)
        for p in params:
            p.add_(p.grad * scale)
            p.grad = None
    for m in momenta:
        m.momentum = 0.0
    loss_now().backward()
    for m, momentum in momenta.items():
        m.momentum = momentum
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)


@torch.no_grad()
def evaluate(model, loader, autocast):
    model.eval()
    with autocast:
        correct = sum((model(images).argmax(1) == labels).sum() for images, labels in loader)
    return 100 * correct.item() / len(loader.labels)


def finish(args, model, average, train_loader, val_loader, device, autocast):
    """The assignment's plain state dict: averaged, folded, scaled for the Adam epoch, tested as stored, saved."""
    if average is not None:
        with autocast:
            update_bn(train_loader, average)  # BatchNorm statistics of the averaged weights
        model = average.module
        print(f'using the average of epochs {args.swa_from} to {args.epochs} (BatchNorm statistics recomputed)')
    model = model.float().to(memory_format=torch.contiguous_format).cpu()
    model = fold_batchnorm(model) if args.batch_norm else model
    weights = model.state_dict() if args.no_rescale else compact(scale_for_adam(model).state_dict())
    stored = fast_path.prepare(MODELS[args.model](), device)  # what is saved is what is measured, as main.py does
    stored.load_state_dict(weights)
    accuracy = evaluate(stored, val_loader, devices.autocast(device, bf16=False))
    print(f'saved model: validation accuracy {accuracy:.2f} % (float32)')
    save(weights, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    errors.install()
    main()
