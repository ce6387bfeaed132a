"""Train VGG16 or ResNet50_layer4 on CIFAR-10 from scratch and write a
checkpoint that main.py loads (the assignment's plain state dict).

    python train.py --model resnet50 --data DIR --epochs 50 --out outputs/resnet50.ckpt
    python train.py --resume outputs/resnet50.ckpt.state       # after an interruption
    python -m tools.ship_checkpoint outputs/resnet50.ckpt      # make it the shipped one
    torchrun --standalone --nproc_per_node 2 train.py --model resnet50 --data DIR --epochs 1 --out PATH

The recipe: SGD with Nesterov momentum, a one-cycle learning rate, weight
decay 5e-4, the assignment's crop and flip. `--holdout N` keeps N training
images (the same ones every time) out of training and validates on them, so
the test split is never looked at; `--holdout 0` validates on the test split.
`--teacher CKPT [CKPT ...]` distils from trained models (knowledge
distillation, Hinton et al. 2015): the loss mixes the labels with the
teachers' softened predictions on each training image.
VGG16 can train with BatchNorm after every convolution (`--batch-norm`),
folded into the convolutions before saving: what is saved is the
assignment's BN-free VGG16, computing the same function.

The whole training state is written after every epoch (float32 weights,
optimizer, schedule, random generators, the per-epoch log); `--resume STATE`
continues the same run, so an interrupted run loses at most one epoch. bf16
autocast runs where the hardware has it natively (GPUs; CPUs with AVX512-BF16
or AMX); elsewhere training stays float32. Under torchrun it runs
DistributedDataParallel (nccl on GPUs, gloo on CPUs).

Before saving, the weights are scaled up (helpers/weight_scaling.py) so that
main.py's one Adam epoch does not undo the training, and stored in half
precision.
"""
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from helpers import data, devices, fast_path, flags
from helpers.checkpoints import CheckpointError, load_checkpoint, read_state_dict, read_training_state, save_checkpoint
from helpers.model_table import MODELS, TITLES, identify, title_of
from helpers.weight_scaling import compact, fold_batchnorm, scale_for_adam
from vgg16_full import VGG, cfg, make_layers


def parse(argv=None):
    p = flags.Parser(prog='python train.py', description=__doc__.splitlines()[0])
    p.add_model_flag()
    p.add_argument('--data', metavar='DIR', default='./data', help='CIFAR-10 root or image folder')
    p.add_argument('--epochs', type=flags.positive_int, default=30)
    p.add_argument('--out', metavar='PATH')
    p.add_argument('--batch-size', type=flags.positive_int, default=128, help='per process')
    p.add_argument('--lr', type=flags.positive_float, default=0.1, help='peak of the one-cycle schedule')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--label-smoothing', type=float, default=0.0)
    p.add_argument('--cutout', type=flags.nonnegative_int, default=0, metavar='N',
                   help='blank a random N x N square of every training image (Cutout; 0: off)')
    p.add_argument('--batch-norm', action='store_true',
                   help='VGG16: train with BatchNorm after each convolution, folded away before saving')
    p.add_argument('--teacher', metavar='CKPT', nargs='+',
                   help='distil from these trained checkpoints (VGG16 or ResNet50_layer4; several: their average)')
    p.add_argument('--distill-weight', type=float, default=0.9, metavar='W',
                   help="with --teacher: the teachers' share of the loss, 0 to 1")
    p.add_argument('--temperature', type=flags.positive_float, default=4.0, metavar='T',
                   help="with --teacher: softens both models' predictions")
    p.add_argument('--holdout', type=flags.nonnegative_int, default=5000,
                   help='validate on this many training images kept out of training (0: the test split)')
    p.add_argument('--bf16', choices=['auto', 'off'], default='auto',
                   help='auto: bf16 autocast where the hardware runs it natively')
    p.add_device_flag()
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--state', metavar='PATH', help='resumable training state (default: OUT.state)')
    p.add_argument('--resume', metavar='STATE', help='continue the run whose state this is')
    p.add_argument('--stop-after', type=flags.positive_int, metavar='N',
                   help='stop after N epochs of this invocation (the state is saved; --resume goes on)')
    p.add_argument('--no-rescale', action='store_true', help='save the weights as trained')
    p.add_argument('--full-precision', action='store_true', help='save float32 weights (twice the size)')
    args = p.parse_args(argv)
    if args.resume:
        return args
    if args.model is None or args.out is None:
        p.error('--model and --out are required (or --resume STATE)')
    if args.batch_norm and args.model != 'vgg16':
        p.error('--batch-norm is for --model vgg16 (ResNet50_layer4 has BatchNorm already)')
    if not 0 <= args.distill_weight <= 1:
        p.error(f'--distill-weight must be between 0 and 1, not {args.distill_weight}')
    args.state = args.state or args.out + '.state'
    return args


def build(args):
    if args.batch_norm:
        return VGG(make_layers(cfg['D'], batch_norm=True))
    return MODELS[args.model]()


@torch.no_grad()
def evaluate(model, loader, autocast):
    model.eval()
    correct = total = 0
    for images, labels in loader:
        with autocast:
            correct += (model(images).argmax(1) == labels).sum()
        total += len(labels)
    return 100 * correct.item() / total


def main():
    args = parse()
    state = None
    if args.resume:
        state = read_training_state(args.resume)
        args.__dict__.update(state['args'], state=args.resume, resume=args.resume, stop_after=args.stop_after)
    flags.check_output(args.out, '--out')  # at once, not after hours of training
    flags.check_output(args.state, '--state')
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = devices.pick_device(args.device)
    if world > 1:
        if device.type == 'cuda':
            local = int(os.environ.get('LOCAL_RANK', 0))
            if torch.cuda.device_count() <= local:
                raise flags.UsageError(f'{world} processes need {world} GPUs on this machine, but PyTorch sees '
                                       f'{torch.cuda.device_count()}: use --nproc_per_node '
                                       f'{torch.cuda.device_count()}, or --device cpu')
            device = torch.device('cuda', local)
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    main_process = rank == 0
    log = print if main_process else (lambda *a, **k: None)
    autocast = devices.autocast(device, cpu_bf16=args.bf16 == 'auto')
    log(f'train.py: {TITLES[args.model]}{" with BatchNorm" if args.batch_norm else ""}, world size {world}, '
        f'device {device}, {devices.precision(autocast, device)}, data {args.data}'
        + (f', resuming {args.resume} after epoch {state["epoch"]}' if state else ''))
    torch.manual_seed(args.seed)
    # the teachers' files are read before the data, so that a wrong one stops the run at once
    teachers = [load_teacher(path) for path in args.teacher or ()] if not (state and 'teacher' in state) else []

    train_loader, val_loader = data.tensor_loaders(args.data, args.batch_size, device, args.seed,
                                                   holdout=args.holdout, test_batch_size=500, rank=rank, world=world,
                                                   cutout=args.cutout)
    log(f'{len(train_loader.labels)} training images{f" (Cutout {args.cutout}x{args.cutout})" if args.cutout else ""}, '
        f'{len(val_loader.labels)} validation images '
        + ('(held out of the training split)' if args.holdout else '(the test split)'))
    model = fast_path.prepare(build(args), device, bf16=isinstance(autocast, torch.autocast))
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                                weight_decay=args.weight_decay)
    # warm-up: the first quarter of the steps; OneCycleLR divides by zero when that is exactly one step
    warmup = 0.3 if args.epochs * len(train_loader) == 4 else 0.25
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=len(train_loader), pct_start=warmup)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    if args.teacher:
        if not teachers:  # resuming: the teachers' files may have changed or gone since
            train_loader.extra = state['teacher'].to(device)
            log(f'distilling from {" and ".join(args.teacher)}: their predictions as saved in the state')
        else:
            train_loader.extra = teacher_predictions(teachers, args.teacher, train_loader, device,
                                                     args.temperature, log)
        log(f'loss: {1 - args.distill_weight:g} x labels + {args.distill_weight:g} x teachers '
            f'at temperature {args.temperature:g}')
    history, first = [], 0
    if state:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['rng'])
        train_loader.generator.set_state(state['loader_rng'])
        if device.type == 'cuda' and 'cuda_rng' in state:
            torch.cuda.set_rng_state(state['cuda_rng'], device)
        history, first = state['history'], state['epoch']
        if first >= args.epochs:
            log(f'the run had finished its {args.epochs} epochs; writing its checkpoint {args.out} again')

    for epoch in range(first, args.epochs):
        start = time.perf_counter()
        net.train()
        total_loss = torch.zeros((), device=device)
        lr = scheduler.get_last_lr()[0]
        bar = tqdm(train_loader, desc=f'epoch {epoch + 1}/{args.epochs}', leave=False,
                   disable=None if main_process else True)  # None: no bar when the output is a log file
        for images, labels, *soft in bar:
            with autocast:
                outputs = net(images)
                loss = criterion(outputs, labels)
                if soft:
                    # T^2 keeps the soft targets' gradients the size of the labels' (Hinton et al.)
                    distill = F.cross_entropy(outputs.float() / args.temperature, soft[0]) * args.temperature ** 2
                    loss = (1 - args.distill_weight) * loss + args.distill_weight * distill
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach()
        accuracy = evaluate(model, val_loader, autocast)
        seconds = time.perf_counter() - start
        history.append(dict(epoch=epoch + 1, train_loss=total_loss.item() / len(train_loader),
                            val_accuracy=accuracy, lr=lr, seconds=seconds))
        log(f'epoch {epoch + 1}/{args.epochs}: loss {history[-1]["train_loss"]:.4f}, '
            f'validation accuracy {accuracy:.2f} %, {seconds:.0f} s')
        if main_process:
            save_checkpoint(dict(args=vars(args), epoch=epoch + 1, history=history,
                                 model=model.state_dict(),
                                 optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                 rng=torch.get_rng_state(), loader_rng=train_loader.generator.get_state(),
                                 **({'teacher': train_loader.extra.cpu()} if args.teacher else {}),
                                 **({'cuda_rng': torch.cuda.get_rng_state(device)} if device.type == 'cuda' else {})),
                            args.state)
            save_history(history, args.state)
        if args.stop_after and epoch + 1 - first >= args.stop_after and epoch + 1 < args.epochs:
            log(f'stopped after epoch {epoch + 1} of {args.epochs} (--stop-after); go on with: '
                f'python train.py --resume {args.state}')
            break
    else:
        if main_process:
            finish(args, model, val_loader, device, log)
    if world > 1:
        dist.destroy_process_group()


def load_teacher(path):
    """The model in checkpoint `path`, either of the two, or a CheckpointError."""
    state = read_state_dict(path, missing_hint='give --teacher a checkpoint of VGG16 or ResNet50_layer4')
    name = identify(state)
    if name is None:
        raise CheckpointError(f'{path} is neither a VGG16 nor a ResNet50_layer4 checkpoint; '
                              'give --teacher one that main.py loads')
    teacher = MODELS[name]()
    load_checkpoint(teacher, path, state)
    return teacher


@torch.no_grad()
def teacher_predictions(teachers, paths, loader, device, temperature, log):
    """The teachers' softened class probabilities for every training image, computed once.

    Each teacher sees each image unaugmented and mirrored, and all these
    predictions are averaged: a steadier target than one random crop, and no
    teacher pass per training step.
    """
    titles = [title_of(t) for t in teachers]
    teachers = [fast_path.prepare(t, device).eval() for t in teachers]
    in_order = data.TensorLoader(loader.images, loader.labels, 500, device=device, channels_last=loader.channels_last)
    probabilities = []
    for x, _ in in_order:
        views = [F.softmax(t(v).float() / temperature, 1) for t in teachers for v in (x, x.flip(3))]
        probabilities.append(torch.stack(views).mean(0))
    probabilities = torch.cat(probabilities)
    agrees = (probabilities.argmax(1) == loader.labels).float().mean().item() * 100
    names = ' and '.join(f'{p} ({t})' for p, t in zip(paths, titles))
    log(f'distilling from {names}, right on {agrees:.2f} % of the training images')
    return probabilities


def finish(args, model, val_loader, device, log):
    """The trained model as the assignment's plain state dict, scaled for the Adam epoch, tested, saved."""
    model = model.float().to(memory_format=torch.contiguous_format).cpu()
    if args.batch_norm:
        model = fold_batchnorm(model)
    if not args.no_rescale:
        scale_for_adam(model)
    state = model.state_dict() if args.full_precision else compact(model.state_dict())
    # what is saved is what is measured: reload the stored numbers, test in float32 like main.py
    model = fast_path.prepare(MODELS[args.model](), device)
    model.load_state_dict(state)
    accuracy = evaluate(model, val_loader, contextlib.nullcontext())
    log(f'saved model: validation accuracy {accuracy:.2f} % (float32)')
    save_checkpoint(state, args.out)
    log(f'wrote {args.out}')


def save_history(history, state_path):
    """The per-epoch log beside the state, as JSON, for plotting."""
    path = state_path + '.json'
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(history, f, indent=1)
    os.replace(tmp, path)


if __name__ == '__main__':
    flags.install_friendly_errors()
    main()
