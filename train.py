"""Train VGG16 or ResNet50_layer4 on CIFAR-10 from scratch and write a
checkpoint that main.py loads (the assignment's plain state dict).

    python train.py --model resnet50 --data DIR --epochs 30 --out checkpoints/resnet50_cifar10.ckpt
    torchrun --standalone --nproc_per_node 2 train.py --model resnet50 --data DIR --epochs 1 --out PATH

The recipe: SGD with Nesterov momentum, a one-cycle learning rate, weight
decay 5e-4, the assignment's crop and flip. On a GPU the data is decoded once
and kept there, augmented there, and the model runs in bf16 autocast with
channels_last. Under torchrun it runs DistributedDataParallel (nccl on GPUs,
gloo on CPUs), each process on its share of every epoch.

Before saving, the model is rescaled (rescale.py) so that main.py's one Adam
epoch does not undo the training, and stored with half-precision weights.
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

import cifar10
import cli
import speedups
from checkpoint_io import save_checkpoint
from models import MODELS
from rescale import compact, rescale


def parse():
    p = cli.Parser(prog='train.py', description=__doc__.splitlines()[0])
    p.add_argument('--model', choices=sorted(MODELS), required=True)
    p.add_argument('--data', metavar='DIR', default='./data', help='CIFAR-10 root or image folder')
    p.add_argument('--epochs', type=cli.positive_int, default=30)
    p.add_argument('--out', metavar='PATH', required=True)
    p.add_argument('--batch-size', type=cli.positive_int, default=256, help='per process')
    p.add_argument('--lr', type=cli.positive_float, default=0.1, help='peak of the one-cycle schedule')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--label-smoothing', type=float, default=0.0)
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-rescale', action='store_true', help='save the weights as trained')
    p.add_argument('--full-precision', action='store_true', help='save float32 weights (twice the size)')
    return p.parse_args()


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
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = speedups.pick_device(args.device)
    if world > 1:
        if device.type == 'cuda':
            device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    main_process = rank == 0
    log = print if main_process else (lambda *a, **k: None)
    log(f'train.py: {args.model}, world size {world}, device {device}, data {args.data}')
    torch.manual_seed(args.seed)

    train_loader = cifar10.TensorLoader(*cifar10.decode(args.data, 'train'), args.batch_size, train=True,
                                        device=device, channels_last=True, seed=args.seed, rank=rank, world=world)
    test_loader = cifar10.TensorLoader(*cifar10.decode(args.data, 'test'), 500, device=device, channels_last=True)
    model = speedups.prepare(MODELS[args.model](), device)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    autocast = speedups.autocast(device)

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=len(train_loader), pct_start=0.25)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        total_loss = torch.zeros((), device=device)
        bar = tqdm(train_loader, desc=f'epoch {epoch + 1}/{args.epochs}', leave=False, disable=not main_process)
        for images, labels in bar:
            with autocast:
                loss = criterion(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach()
        accuracy = evaluate(model, test_loader, autocast)
        log(f'epoch {epoch + 1}/{args.epochs}: loss {total_loss.item() / len(train_loader):.4f}, '
            f'validation accuracy {accuracy:.2f} %, {time.perf_counter() - start:.0f} s')

    if main_process:
        model = model.float().to(memory_format=torch.contiguous_format)
        if not args.no_rescale:
            rescale(model)
        state = model.state_dict() if args.full_precision else compact(model.state_dict())
        # what is saved is what is measured: reload the stored numbers before testing
        model.load_state_dict(state)
        log(f'saved model: validation accuracy {evaluate(model, test_loader, autocast):.2f} %')
        save_checkpoint({k: v.cpu() for k, v in state.items()}, args.out)
        log(f'wrote {args.out}')
    if world > 1:
        dist.destroy_process_group()


if __name__ == '__main__':
    cli.install_friendly_errors()
    main()
