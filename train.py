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

`--swa-from E` averages the weights of epochs E to the last (SWA, Izmailov et
al. 2018); `--sam RHO` takes sharpness-aware steps (Foret et al. 2021).
`--init CKPT` starts from a trained checkpoint instead of random weights, e.g.
SWA on top of the shipped model: `--init checkpoints/resnet50_cifar10.ckpt
--epochs 25 --swa-from 1 --swa-lr 0.01`.

The whole training state is written after every epoch (float32 weights,
optimizer, schedule, random generators, the weight average, the per-epoch
log); `--resume STATE` continues the same run with its own settings (only
--out, --device, --bf16 and --stop-after may change), so an interrupted run
loses at most one epoch. bf16
autocast runs where the hardware has it natively (GPUs; CPUs with AVX512-BF16
or AMX); elsewhere training stays float32. Under torchrun it runs
DistributedDataParallel (nccl on GPUs, gloo on CPUs).

Before saving, the weights are scaled up (helpers/weight_scaling.py) so that
main.py's one Adam epoch does not undo the training, and stored in half
precision.
"""
import contextlib
import hashlib
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from helpers import data, devices, errors, fast_path, flags, guards, paths
from helpers.checkpoints import (CheckpointError, load_either, read_training_state, refuse_non_finite,
                                 save_checkpoint, write_atomic)
from helpers.model_table import MODELS, TITLES, title_of
from helpers.progress import progress
from helpers.weight_scaling import compact, fold_batchnorm, looks_scaled, scale_for_adam, unscale
from vgg16_full import VGG, cfg, make_layers


# what may differ when a run is resumed (the machine it runs on, where it writes, how long it goes on now);
# anything else given with --resume must be what the run started with
MAY_CHANGE_ON_RESUME = {'resume', 'state', 'out', 'device', 'bf16', 'stop_after', 'given'}


def parse(argv=None):
    p = flags.Parser(prog='python train.py', description=__doc__.splitlines()[0])
    p.add_model_flag()
    p.add_argument('--data', metavar='DIR', default='./data', help='CIFAR-10 root or image folder')
    p.add_argument('--epochs', type=flags.positive_int, default=30)
    p.add_argument('--out', metavar='PATH')
    p.add_argument('--batch-size', type=flags.positive_int, default=128, help='per process')
    p.add_argument('--lr', type=flags.positive_float, default=0.1, help='peak of the one-cycle schedule')
    p.add_argument('--momentum', type=flags.fraction, default=0.9)
    p.add_argument('--weight-decay', type=flags.nonnegative_float, default=5e-4)
    p.add_argument('--label-smoothing', type=flags.fraction, default=0.0)
    p.add_argument('--cutout', type=flags.nonnegative_int, default=0, metavar='N',
                   help='blank a random N x N square of every training image (Cutout; 0: off)')
    p.add_argument('--batch-norm', action='store_true',
                   help='VGG16: train with BatchNorm after each convolution, folded away before saving')
    p.add_argument('--teacher', metavar='CKPT', nargs='+',
                   help='distil from these trained checkpoints (VGG16 or ResNet50_layer4; several: their average)')
    p.add_argument('--distill-weight', type=flags.nonnegative_float, default=0.9, metavar='W',
                   help="with --teacher: the teachers' share of the loss, 0 to 1")
    p.add_argument('--temperature', type=flags.positive_float, default=4.0, metavar='T',
                   help="with --teacher: softens both models' predictions")
    p.add_argument('--holdout', type=flags.nonnegative_int, default=5000,
                   help='validate on this many training images kept out of training (0: the test split)')
    p.add_argument('--swa-from', type=flags.positive_int, metavar='E',
                   help='average the weights of epochs E to the last (SWA), learning rate held from E on')
    p.add_argument('--swa-lr', type=flags.positive_float, metavar='LR',
                   help="with --swa-from: the held learning rate (default: the schedule's at epoch E)")
    p.add_argument('--init', metavar='CKPT',
                   help='start from the weights of this trained checkpoint (e.g. the shipped one, for SWA on top '
                        'of it) instead of random ones')
    p.add_argument('--sam', type=flags.positive_float, metavar='RHO',
                   help='sharpness-aware minimization: each step takes the gradient at the weights '
                        'moved RHO uphill (two passes a step; e.g. 0.05)')
    p.add_argument('--bf16', choices=['auto', 'off'], default='auto',
                   help='auto: bf16 autocast where the hardware runs it natively')
    p.add_device_flag()
    p.add_argument('--seed', type=flags.seed_number, default=0)
    p.add_argument('--state', metavar='PATH', help='resumable training state (default: OUT.state)')
    p.add_argument('--resume', metavar='STATE', help='continue the run whose state this is')
    p.add_argument('--stop-after', type=flags.positive_int, metavar='N',
                   help='stop after N epochs of this invocation (the state is saved; --resume goes on)')
    p.add_argument('--no-rescale', action='store_true', help='save the weights as trained')
    p.add_argument('--full-precision', action='store_true', help='save float32 weights (twice the size)')
    args = p.parse_args(argv)
    args.given = sorted(p.given(argv, args))
    for name in ('data', 'out', 'init', 'state', 'resume'):  # '~' the shell left alone (in quotes, say)
        setattr(args, name, paths.expand(getattr(args, name)))
    args.teacher = args.teacher and [paths.expand(t) for t in args.teacher]
    if args.resume:
        return args
    if args.model is None or args.out is None:
        p.error('--model and --out are required (or --resume STATE)')
    if args.batch_norm and args.model != 'vgg16':
        p.error('--batch-norm is for --model vgg16 (ResNet50_layer4 has BatchNorm already)')
    if args.swa_from and args.swa_from > args.epochs:
        p.error(f'--swa-from {args.swa_from} is after the last epoch ({args.epochs})')
    if args.swa_lr and not args.swa_from:
        p.error('--swa-lr goes with --swa-from')
    if args.init and args.batch_norm:
        p.error('--init goes without --batch-norm (a shipped VGG16 has its BatchNorm folded away)')
    if not 0 <= args.distill_weight <= 1:
        p.error(f'--distill-weight must be between 0 and 1, not {args.distill_weight}')
    args.state = args.state or args.out + '.state'
    if os.path.realpath(args.state) == os.path.realpath(args.out):
        p.error(f'--out and --state are the same file ({args.out}): the checkpoint would replace the state')
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
    state = restore_args(args)
    guards.check_output(args.out, '--out')  # at once, not after hours of training
    guards.check_output(args.state, '--state')
    device, rank, world = setup_distributed(devices.pick_device(args.device))
    main_process = rank == 0
    log = print if main_process else (lambda *a, **k: None)
    autocast = devices.autocast(device, bf16=args.bf16 == 'auto')
    log(f'train.py: {TITLES[args.model]}{" with BatchNorm" if args.batch_norm else ""}, world size {world}, '
        f'device {device}, {devices.precision(autocast, device)}, data {args.data}'
        + (f', resuming {args.resume} after epoch {state["epoch"]}' if state else ''))
    torch.manual_seed(args.seed)
    # the teachers' files are read before the data, so that a wrong one stops the run at once
    teachers = [load_teacher(path) for path in args.teacher or ()] if not (state and 'teacher' in state) else []
    model = load_init(args) if args.init and not state else build(args)  # resuming: the state holds the weights

    train_loader, val_loader = data.tensor_loaders(args.data, args.batch_size, device, args.seed,
                                                   holdout=args.holdout, test_batch_size=500, rank=rank, world=world,
                                                   cutout=args.cutout,
                                                   channels_last=fast_path.channels_last(model, device))
    log(f'{len(train_loader.labels)} training images{f" (Cutout {args.cutout}x{args.cutout})" if args.cutout else ""}, '
        f'{len(val_loader.labels)} validation images '
        + ('(held out of the training split)' if args.holdout else '(the test split)'))
    model = fast_path.prepare(model, device, bf16=isinstance(autocast, torch.autocast))
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    optimizer, scheduler = make_optimizer(args, model, len(train_loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    if args.teacher:
        attach_teachers(args, state, teachers, train_loader, device, autocast, log)
    history, first, average = [], 0, None
    fingerprint = data_fingerprint(train_loader, val_loader)
    if state:
        history, first, average = restore(args, state, model, optimizer, scheduler, train_loader, device,
                                          fingerprint)
        if first >= args.epochs:
            log(f'the run had finished its {args.epochs} epochs; writing its checkpoint {args.out} again')

    for epoch in range(first, args.epochs):
        start = time.perf_counter()
        averaging = bool(args.swa_from) and epoch + 1 >= args.swa_from
        if averaging:
            hold_learning_rate(args, optimizer, scheduler, log)
        lr = optimizer.param_groups[0]['lr']
        loss = train_one_epoch(args, net, train_loader, optimizer, None if averaging else scheduler, criterion,
                               autocast, device, desc=f'epoch {epoch + 1}/{args.epochs}', bar=main_process)
        if averaging:
            average = add_to_average(average, model)
        accuracy = evaluate(model, val_loader, autocast)
        seconds = time.perf_counter() - start
        history.append(dict(epoch=epoch + 1, train_loss=loss, val_accuracy=accuracy, lr=lr, seconds=seconds))
        log(f'epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, validation accuracy {accuracy:.2f} %, {seconds:.0f} s'
            + (f', {average["n"]} epochs averaged' if average else ''))
        if main_process:
            save_state(args, epoch + 1, history, model, optimizer, scheduler, train_loader, device, average,
                       fingerprint)
        if args.stop_after and epoch + 1 - first >= args.stop_after and epoch + 1 < args.epochs:
            log(f'stopped after epoch {epoch + 1} of {args.epochs} (--stop-after); go on with: '
                f'python train.py --resume {args.state}')
            break
    else:
        if main_process:
            if average:
                use_average(model, average, train_loader, log)
            finish(args, model, val_loader, device, log)
    if world > 1:
        dist.destroy_process_group()


def make_optimizer(args, model, steps_per_epoch):
    """The recipe's SGD with Nesterov momentum and its one-cycle learning rate."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                                weight_decay=args.weight_decay)
    # warm-up: the first quarter of the steps; OneCycleLR divides by zero when that is exactly one step
    warmup = 0.3 if args.epochs * steps_per_epoch == 4 else 0.25
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=warmup)
    return optimizer, scheduler


def attach_teachers(args, state, teachers, train_loader, device, autocast, log):
    """The teachers' predictions, one row per training image, given out with each batch."""
    if not teachers:  # resuming: the teachers' files may have changed or gone since
        train_loader.extra = state['teacher'].to(device)
        log(f'distilling from {" and ".join(args.teacher)}: their predictions as saved in the state')
    else:
        train_loader.extra = teacher_predictions(teachers, args.teacher, train_loader, device,
                                                 args.temperature, autocast, log)
    log(f'loss: {1 - args.distill_weight:g} x labels + {args.distill_weight:g} x teachers '
        f'at temperature {args.temperature:g}')


def restore_args(args):
    """With --resume: the state it names, with its run's settings put into `args` (else None).
    Flags given with --resume may change only what MAY_CHANGE_ON_RESUME names."""
    if not args.resume:
        return None
    state = read_training_state(args.resume)
    saved = state['args']
    if not isinstance(saved, dict) or saved.get('model') not in MODELS or not isinstance(state['epoch'], int):
        raise CheckpointError(f"{args.resume} is not a state train.py can continue (its settings are missing or "
                              "damaged); start the run again without --resume")
    for key in args.given:
        if key not in MAY_CHANGE_ON_RESUME and key in saved and getattr(args, key) != saved[key]:
            flag = '--' + key.replace('_', '-')
            raise errors.UsageError(f"{flag} {getattr(args, key)} differs from the run's {saved[key]}: --resume goes "
                                    "on with the run's own settings (only --out, --device, --bf16 and --stop-after "
                                    "may change); start a new run to change it")
    mine = {k: getattr(args, k) for k in args.given if k in MAY_CHANGE_ON_RESUME}
    mine.update(state=args.resume, resume=args.resume, stop_after=args.stop_after, given=args.given)
    args.__dict__.update(saved)
    args.__dict__.update(mine)
    if os.path.realpath(args.out) == os.path.realpath(args.resume):
        raise errors.UsageError(f'--out {args.out} is the state being resumed; choose another --out')
    return state


def data_fingerprint(train_loader, val_loader):
    """How many images the run trains on and which it validates on: resuming on other data would
    not continue the same run (and a different count breaks the schedule)."""
    held = hashlib.sha256(val_loader.images.cpu().numpy().tobytes())
    held.update(val_loader.labels.cpu().numpy().tobytes())
    return dict(train_images=len(train_loader.labels), validation=held.hexdigest())


def setup_distributed(device):
    """(device, rank, world size): under torchrun, each process's GPU and the process group."""
    try:
        world = int(os.environ.get('WORLD_SIZE', 1))
        rank = int(os.environ.get('RANK', 0))
    except ValueError:
        raise errors.UsageError('WORLD_SIZE and RANK must be whole numbers (torchrun sets them); unset them') from None
    if world > 1 and 'MASTER_ADDR' not in os.environ:  # set by torchrun, with the rank's address to meet at
        raise errors.UsageError(f'WORLD_SIZE is {world}, but this process was not started by torchrun; unset '
                                'WORLD_SIZE, or start with torchrun --standalone --nproc_per_node N train.py ...')
    if world > 1:
        if device.type == 'cuda':
            local = int(os.environ.get('LOCAL_RANK', 0))
            here = int(os.environ.get('LOCAL_WORLD_SIZE', world))  # processes on this machine
            if torch.cuda.device_count() < here:  # the same test in every process: rank 0 says it
                raise errors.UsageError(f'{here} processes need {here} GPUs on this machine, but PyTorch sees '
                                        f'{torch.cuda.device_count()}: use --nproc_per_node '
                                        f'{torch.cuda.device_count()}, or --device cpu')
            device = torch.device('cuda', local)
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        errors.install()  # init_process_group puts its own excepthook in place of ours: mistakes are one line again
    return device, rank, world


def restore(args, state, model, optimizer, scheduler, train_loader, device, fingerprint):
    """Put a saved run back where it stopped; (history, epochs done, weight average or None)."""
    saved_data = state.get('data')
    if saved_data and saved_data != fingerprint:
        raise CheckpointError(f"the data in {args.data} is not what this run trained on ({saved_data['train_images']} "
                              f"training images then, {len(train_loader.labels)} now, or other held-out images); "
                              "resume with the same data, or start a new run")
    try:
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['rng'])
        train_loader.generator.set_state(state['loader_rng'])
        if device.type == 'cuda' and 'cuda_rng' in state:
            torch.cuda.set_rng_state(state['cuda_rng'], device)
        average = state.get('average')
        if average:
            average = dict(n=average['n'], weights={k: v.to(device) for k, v in average['weights'].items()})
        history = list(state['history'])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{args.resume} is not a state this run can continue ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); start the run again without --resume") from None
    return history, state['epoch'], average


def train_one_epoch(args, net, loader, optimizer, scheduler, criterion, autocast, device, desc, bar=True):
    """One pass over the training images; the mean loss. SAM's two passes a step with --sam;
    `scheduler` None holds the learning rate (SWA)."""
    net.train()
    total_loss = torch.zeros((), device=device)
    # a bar in a terminal or notebook; none in a log file, which has a line per epoch
    for images, labels, *soft in (progress(loader, desc, tenths=False) if bar else loader):
        def compute_loss():
            with autocast:
                outputs = net(images)
                loss = criterion(outputs, labels)
                if soft:
                    # T^2 keeps the soft targets' gradients the size of the labels' (Hinton et al.)
                    distill = F.cross_entropy(outputs.float() / args.temperature, soft[0]) * args.temperature ** 2
                    loss = (1 - args.distill_weight) * loss + args.distill_weight * distill
            return loss
        optimizer.zero_grad(set_to_none=True)
        loss = compute_loss()
        loss.backward()
        if args.sam:
            sam_second_pass(net, compute_loss, args.sam)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach()
    return total_loss.item() / len(loader)


def sam_second_pass(net, compute_loss, rho):
    """Sharpness-aware minimization (Foret et al. 2021): replace the gradients by those at the
    weights moved `rho` uphill (w + rho g / |g|), then move the weights back.

    BatchNorm's running statistics are left as the first pass set them (momentum 0 for the
    second pass): the perturbed weights are a probe, not a model to keep statistics of."""
    params = [p for p in net.parameters() if p.grad is not None]
    with torch.no_grad():
        weights = [p.detach().clone() for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        for p in params:
            p.add_(p.grad * (rho / (norm + 1e-12)))
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    for p in params:
        p.grad = None
    compute_loss().backward()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)


def hold_learning_rate(args, optimizer, scheduler, log):
    """SWA's constant learning rate from --swa-from on: --swa-lr, or what the schedule gave there."""
    if args.swa_lr is None:
        args.swa_lr = scheduler.get_last_lr()[0]  # kept in the state's args, so a resumed run holds the same
        log(f'from epoch {args.swa_from} on: learning rate held at {args.swa_lr:.4g}, weights averaged')
    for group in optimizer.param_groups:
        group['lr'] = args.swa_lr


@torch.no_grad()
def add_to_average(average, model):
    """The running mean of the weights (parameters) at the end of each averaged epoch."""
    weights = {k: p.detach().float() for k, p in model.named_parameters()}
    if average is None:
        return dict(n=1, weights={k: w.clone() for k, w in weights.items()})
    average['n'] += 1
    for k, w in weights.items():
        average['weights'][k] += (w - average['weights'][k]) / average['n']
    return average


@torch.no_grad()
def use_average(model, average, train_loader, log):
    """Load the averaged weights and recompute BatchNorm's statistics for them on the training images."""
    for k, p in model.named_parameters():
        p.copy_(average['weights'][k])
    torch.optim.swa_utils.update_bn(train_loader, model)
    log(f'using the average of the last {average["n"]} epochs\' weights (BatchNorm statistics recomputed)')


def save_state(args, epoch, history, model, optimizer, scheduler, train_loader, device, average, fingerprint):
    """Everything --resume needs to go on exactly, written atomically, and the per-epoch log as JSON."""
    save_checkpoint(dict(args=vars(args), epoch=epoch, history=history, model=model.state_dict(), data=fingerprint,
                         optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         rng=torch.get_rng_state(), loader_rng=train_loader.generator.get_state(),
                         **({'teacher': train_loader.extra.cpu()} if args.teacher else {}),
                         **({'average': average} if average else {}),
                         **({'cuda_rng': torch.cuda.get_rng_state(device)} if device.type == 'cuda' else {})),
                    args.state)
    save_history(history, args.state)


def load_init(args):
    """--init's model at a trained scale: a checkpoint scaled for main.py's Adam epoch is scaled back (the same
    function; ResNet50_layer4's trained weights exactly), since SGD's steps would be tiny next to scaled weights."""
    name, model = load_either(args.init, missing_hint='give --init a checkpoint of the model being trained',
                              otherwise='give --init one that main.py loads')
    if name != args.model:
        raise errors.UsageError(f'--init {args.init} is a {TITLES[name]} checkpoint, not {TITLES[args.model]}; '
                                f'give --init one of --model {args.model}')
    return unscale(model) if looks_scaled(model) else model


def load_teacher(path):
    """The model in checkpoint `path`, either of the two, or a CheckpointError."""
    return load_either(path, missing_hint='give --teacher a checkpoint of VGG16 or ResNet50_layer4',
                       otherwise='give --teacher one that main.py loads')[1]


@torch.no_grad()
def teacher_predictions(teachers, paths, loader, device, temperature, autocast, log):
    """The teachers' softened class probabilities for every training image, computed once.

    Each teacher sees each image unaugmented and mirrored, and all these
    predictions are averaged: a steadier target than one random crop, and no
    teacher pass per training step. They run under the run's `autocast`: in
    float32 the two shipped teachers took 20 of a one-core run's minutes.
    """
    titles = [title_of(t) for t in teachers]
    bf16 = isinstance(autocast, torch.autocast)
    teachers = [fast_path.prepare(t, device, bf16=bf16).eval() for t in teachers]
    in_order = data.TensorLoader(loader.images, loader.labels, 500, device=device, channels_last=loader.channels_last)
    probabilities = []
    for x, _ in in_order:
        with autocast:
            views = [F.softmax(t(v).float() / temperature, 1) for t in teachers for v in (x, x.flip(3))]
        probabilities.append(torch.stack(views).mean(0))
    probabilities = torch.cat(probabilities)
    agrees = (probabilities.argmax(1) == loader.labels).float().mean().item() * 100
    names = ' and '.join(f'{p} ({t})' for p, t in zip(paths, titles))
    log(f'distilling from {names}, right on {agrees:.2f} % of the training images')
    return probabilities


def finish(args, model, val_loader, device, log):
    """The trained model as the assignment's plain state dict, scaled for the Adam epoch, tested, saved."""
    refuse_non_finite(model.state_dict(), args.out)  # a diverged run: one line, nothing saved, before scaling
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
    write_atomic(state_path + '.json', lambda f: f.write(json.dumps(history, indent=1).encode()))


if __name__ == '__main__':
    errors.install()
    main()
