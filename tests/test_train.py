"""train.py writes checkpoints main.py evaluates, in one process and under torchrun."""
import os
import subprocess
import sys

from conftest import ROOT, run_main


def test_train_one_process_then_main_evaluates_it(image_folder, tmp_path):
    out = tmp_path / 'trained.ckpt'
    r = run_main('--model', 'vgg16', '--data', image_folder, '--epochs', 1, '--batch-size', 100, '--out', out,
                 script='train.py')
    assert r.returncode == 0, r.stderr
    assert 'world size 1' in r.stdout and 'validation accuracy' in r.stdout and out.exists()
    r = run_main('--model', 'vgg16', '--data', image_folder, '--checkpoint', out, '--eval-only')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('Accuracy of the model on the test images:')


def test_train_under_torchrun_with_two_processes(image_folder, tmp_path):
    out = tmp_path / 'ddp.ckpt'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        os.path.join(ROOT, 'train.py'), '--model', 'resnet50', '--data', image_folder,
                        '--epochs', '1', '--batch-size', '50', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'world size 2' in r.stdout and out.exists()
    r = run_main('--data', image_folder, '--checkpoint', out, '--eval-only')
    assert r.returncode == 0, r.stderr


def test_bad_train_flags_are_one_line():
    r = run_main('--model', 'vgg16', '--epochs', '0', '--out', 'x.ckpt', script='train.py')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
