"""CIFAR-10 with VGG16 or ResNet50_layer4, as in the course assignment:
load a pretrained checkpoint, fine-tune one epoch with Adam, save, and test.

    python main.py                    # ResNet50_layer4, as the assignment ships it
    python main.py --model vgg16      # or edit the "Choose model" lines below
    python main.py --help             # every setting below, as a flag
"""
import contextlib
import os
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from helpers import data, devices, errors, fast_path, flags, guards
from helpers.checkpoints import load_checkpoint, save_checkpoint, sha256
from helpers.model_table import own_network
from helpers.progress import progress
from resnet50_full import ResNet50_layer4
from vgg16_full import vgg16

errors.install()

###########################################################
# Choose model
model = ResNet50_layer4()
PATH = './checkpoints/resnet50_cifar10.ckpt'  # see the README for how it was made

# model = vgg16()
# PATH = './checkpoints/vgg16_cifar10.ckpt'
###########################################################
# Hyper-parameters and settings; each has a flag (python main.py --help)
num_epochs = 1  # students should train 1 epoch because they will use cpu
learning_rate = 0.001
batch_size = 100
data_dir = './data'  # CIFAR-10 is downloaded here, or put an image folder here
device = 'auto'      # 'auto': a CUDA GPU, else the Apple GPU, else the CPU; or 'cpu', 'cuda', 'cuda:1', 'mps'...
eval_only = False    # True: only test the checkpoint
out = None           # the fine-tuned checkpoint; None is outputs/<model>_final.ckpt
seed = None
plain = False        # True: the assignment's own data pipeline, float32, no speed-ups
bf16 = 'auto'        # 'auto': bf16 autocast where the CPU or GPU computes bf16 natively; 'off': float32
report = None        # a folder for report.md and its figures
###########################################################
model_name = flags.apply_overrides(globals())
device = devices.pick_device(device)
if seed is not None:
    torch.manual_seed(seed)
# before the data, so that a wrong path fails at once; a network of your own may start from scratch
if PATH is None or own_network(model) and not os.path.exists(PATH):
    print(f'note: {"PATH is None" if PATH is None else f"no checkpoint at {PATH}"}, so {model_name} starts from '
          'random weights')
    PATH = None
else:
    load_checkpoint(model, PATH)
if own_network(model):
    guards.check_outputs(model, model_name)  # ten classes, one score each
checkpoint_sha256 = report and PATH and sha256(PATH)  # before the run, which may save over PATH
if not eval_only:
    guards.check_batch_size(model, batch_size)  # the scaled VGG16 overflows float32 in huge batches

# CIFAR-10: random crop (padding 4) and horizontal flip for training, batch 100
if plain:
    train_loader, test_loader = data.plain_loaders(data_dir, batch_size, train=not eval_only)
    autocast = contextlib.nullcontext()  # float32 throughout
    adam_options = {}
    model = model.to(device)
else:
    train_loader, test_loader = data.tensor_loaders(data_dir, batch_size, device, seed, train=not eval_only,
                                                    channels_last=fast_path.channels_last(model, device))
    autocast = devices.autocast(device, bf16=bf16 == 'auto')
    adam_options = fast_path.adam_options(device)
    model = fast_path.prepare(model, device, bf16=isinstance(autocast, torch.autocast))
train_images = 0 if eval_only else len(train_loader.dataset)
print(f'{model_name} from {PATH or "random weights"} on {device}, {devices.precision(autocast, device)}; '
      f'{train_images} training and {len(test_loader.dataset)} test images from {data_dir}'
      + (' (plain pipeline)' if plain else ''))

# Loss and optimizer
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, **adam_options)


# For updating learning rate
def update_lr(optimizer, lr):
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr


# Train the model
total_step = 0 if eval_only else len(train_loader)
current_lr = learning_rate
step_losses = []  # kept on the device: reading each loss would wait for the GPU every step
train_start = time.perf_counter()

for epoch in range(0 if eval_only else num_epochs):
    model.train()
    train_loss = 0
    for batch_index, (images, labels) in enumerate(progress(train_loader, f'epoch {epoch + 1}')):
        images = images.to(device)
        labels = labels.to(device)

        # Forward pass
        with autocast:
            outputs = model(images)
            loss = criterion(outputs, labels)

        # Backward and optimize
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        train_loss += loss.detach()
        step_losses.append(loss.detach())
        if (batch_index + 1) % 100 == 0:
            guards.stop_if_diverged(step_losses, current_lr)
            tqdm.write("Epoch [{}/{}], Step [{}/{}] Loss: {:.4f}"
                       .format(epoch + 1, num_epochs, batch_index + 1, total_step,
                               train_loss.item() / (batch_index + 1)))
    guards.stop_if_diverged(step_losses, current_lr)  # before anything is saved

    # Decay learning rate
    if (epoch + 1) % 20 == 0:
        current_lr /= 3
        update_lr(optimizer, current_lr)
        save_checkpoint(model.state_dict(), os.path.splitext(out)[0] + f'_epoch{epoch + 1}.ckpt')

# Save the model checkpoint
if not eval_only:
    save_checkpoint(model.state_dict(), out)
    print(f'Saved the fine-tuned model to {out}')
train_seconds = time.perf_counter() - train_start

# Test the model
test_start = time.perf_counter()
model.eval()
confusion = torch.zeros(10, 10, dtype=torch.long, device=device)  # rows: true class, columns: predicted
if report:
    from helpers.report import Gallery
    gallery = Gallery()  # keeps the few test images the report shows, as they go by
with torch.no_grad():
    for images, labels in progress(test_loader, 'test', tenths=False):
        images = images.to(device)
        labels = labels.to(device)
        with autocast:
            outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        confusion += torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10)
        if report:
            gallery.add(images, labels, outputs)
confusion = confusion.cpu()
correct, total = confusion.trace().item(), confusion.sum().item()
test_seconds = time.perf_counter() - test_start

for i, name in enumerate(data.CLASSES):
    print(f'  {name:>10}: {100 * confusion[i, i].item() / max(confusion[i].sum().item(), 1):5.1f} %')
accuracy_line = 'Accuracy of the model on the test images: {} %'.format(100 * correct / total)
print(accuracy_line)

if report:
    from helpers import report as run_report
    run_report.write(report, model_name=model_name, checkpoint=PATH, checkpoint_sha256=checkpoint_sha256,
                     device=device, data_dir=data_dir,
                     train_images=train_images, test_images=len(test_loader.dataset), gallery=gallery,
                     settings=dict(epochs=0 if eval_only else num_epochs, learning_rate=learning_rate,
                                   batch_size=batch_size, seed=seed, plain=plain,
                                   precision=devices.precision(autocast, device)),
                     step_losses=torch.stack(step_losses).float().cpu().tolist() if step_losses else [],
                     confusion=confusion.tolist(), train_seconds=train_seconds, test_seconds=test_seconds,
                     accuracy_line=accuracy_line)
