"""The course assignment: load a pretrained VGG16 or ResNet50_layer4, fine-tune one epoch on CIFAR-10, save, test."""
import time

import torch
import torch.nn as nn
import torchvision.transforms as transforms
from tqdm import tqdm

from helpers import data, errors, settings, setup
from helpers.checkpoints import save, sha256
from helpers.progress import progress
from helpers.report import write as write_report
from resnet50_full import ResNet50_layer4
from vgg16_full import vgg16  # noqa: F401 - for the "Choose model" lines

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
device = 'auto'      # 'auto': a CUDA GPU, else the Apple GPU, else the CPU; or 'cpu', 'cuda', 'cuda:1', 'mps'
eval_only = False    # True: only test the checkpoint
out = None           # the fine-tuned checkpoint; None is outputs/<model>_final.ckpt
seed = None
plain = False        # True: the assignment's own data pipeline, float32, no speed-ups
bf16 = 'auto'        # 'auto': bf16 autocast where the CPU or GPU computes bf16 natively; 'off': float32
report = None        # a folder for report.md and report.png, the run to paste
###########################################################
settings.apply(globals())  # flags override the lines above; every setting is checked

# Image preprocessing modules
transform_train = transforms.Compose([
    transforms.RandomCrop(32, padding=4),
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])

transform_test = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])

# CIFAR-10 dataset: torchvision's (downloaded into an empty data_dir) or an image folder data_dir/{train,test}/<class>/
train_dataset = data.CIFAR10(root=data_dir, train=True, transform=transform_train)
test_dataset = data.CIFAR10(root=data_dir, train=False, transform=transform_test)

# Data loader
train_loader = torch.utils.data.DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True)
test_loader = torch.utils.data.DataLoader(dataset=test_dataset, batch_size=batch_size, shuffle=False)

# Load the checkpoint, move to the device. The speed: loaders left as the assignment's run as whole-tensor batches
# (the same images, crops and flips for a seed), in bf16 where the hardware has it (docs/speed.md)
run = setup.prepare(model, PATH, train_loader, test_loader, device, out, seed, eval_only, plain, bf16, num_epochs,
                    report)
model, train_loader, test_loader, autocast, out = run.model, run.train_loader, run.test_loader, run.autocast, run.out

# Loss and optimizer
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, **run.adam_options)


# For updating learning rate
def update_lr(optimizer, lr):
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr


# Train the model
step_losses = []  # kept on the device: reading each loss would make a GPU wait every step
start = time.perf_counter()
if not eval_only:
    total_step, curr_lr = len(train_loader), learning_rate
    for epoch in range(num_epochs):
        model.train()
        train_loss = 0
        for i, (images, labels) in enumerate(progress(train_loader, f'epoch {epoch + 1}')):
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
            if (i + 1) % 100 == 0:
                setup.stop_if_diverged(step_losses, curr_lr)
                tqdm.write("Epoch [{}/{}], Step [{}/{}] Loss: {:.4f}"
                           .format(epoch + 1, num_epochs, i + 1, total_step, train_loss.item() / (i + 1)))
        setup.stop_if_diverged(step_losses, curr_lr)  # before anything is saved

        # Decay learning rate
        if (epoch + 1) % 20 == 0:
            curr_lr /= 3
            update_lr(optimizer, curr_lr)
            save(model.state_dict(), settings.epoch_file(out, epoch + 1))

    # Save the model checkpoint
    save(model.state_dict(), out)
    print(f'Saved the fine-tuned model to {out}')
train_seconds, start = time.perf_counter() - start, time.perf_counter()

# Test the model
model.eval()
confusion = torch.zeros(10, 10, dtype=torch.long, device=device)  # rows: true class, columns: predicted
with torch.no_grad():
    for images, labels in progress(test_loader, 'test'):
        images, labels = images.to(device), labels.to(device)
        with autocast:
            outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        confusion += torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10)
correct, total = confusion.trace().item(), confusion.sum().item()

setup.print_per_class(confusion)
accuracy_line = 'Accuracy of the model on the test images: {} %'.format(100 * correct / total)
print(accuracy_line)

if report:
    write_report(report, dict(
        model=run.name, checkpoint=run.checkpoint, checkpoint_sha256=run.checkpoint and sha256(run.checkpoint),
        device=device, precision=run.precision, data_dir=run.data_dir, train_images=run.train_images, test_images=total,
        epochs=0 if eval_only else num_epochs, learning_rate=learning_rate, batch_size=run.batch_size, seed=seed,
        plain=plain, confusion=confusion.tolist(), train_seconds=train_seconds,
        test_seconds=time.perf_counter() - start, accuracy_line=accuracy_line))
