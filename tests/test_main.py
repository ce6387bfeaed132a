"""main.py run as a student runs it, on tiny data made by the tests: in this process (runpy) where
a fresh process shows nothing more, as its own process (marked slow) where it does."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_image_folder
from helpers.checkpoints import load_checkpoint
from helpers.model_table import MODELS, PRETRAINED
from helpers.weight_scaling import largest_safe_batch
from scripts import ACCURACY, ROOT, main, one_line_error, run

STEP = re.compile(r'^Epoch \[1/1\], Step \[100/100\] Loss: \d+\.\d{4}$', re.M)


@pytest.mark.slow
@pytest.mark.parametrize('plain', [False, True])
def test_fine_tune_on_an_image_folder(image_folder, checkpoints, tmp_path, plain):
    out = tmp_path / 'fine.ckpt'
    # 300 images in batches of 3: the assignment's 100-step loss line appears
    r = main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 3,
                 '--out', out, '--seed', 0, *(['--plain'] if plain else []))
    assert r.returncode == 0, r.stderr
    assert STEP.search(r.stdout), r.stdout
    assert ACCURACY.search(r.stdout).group(0) == r.stdout.strip().splitlines()[-1]
    assert len(re.findall(r'^ +\w+: +\d+\.\d %$', r.stdout, re.M)) == 10  # per-class accuracy
    model = MODELS['resnet50']()
    load_checkpoint(model, str(out))
    before = torch.load(checkpoints['resnet50'])
    assert not torch.equal(model.fc.weight.detach(), before['fc.weight'])  # it did train


def test_vgg16_on_torchvisions_layout_then_eval_only_of_the_result(torchvision_root, checkpoints, tmp_path):
    out = tmp_path / 'vgg.ckpt'
    # on the CPU: there the same weights give the same numbers to the last bit (cuDNN may pick other kernels)
    # 200 images at batch 20 (the 100-step loss line is test_fine_tune_on_an_image_folder's)
    r = main('--model', 'vgg16', '--data', torchvision_root, '--checkpoint', checkpoints['vgg16'],
                 '--batch-size', 20, '--out', out, '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert '200 training and 50 test images' in r.stdout
    trained = float(ACCURACY.search(r.stdout).group(1))
    r = main('--model', 'vgg16', '--data', torchvision_root, '--checkpoint', out, '--eval-only', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert 'Step' not in r.stdout
    # testing the saved model again gives the same number: what was saved is what was tested
    assert float(ACCURACY.search(r.stdout).group(1)) == trained


@pytest.mark.slow
def test_fast_and_plain_pipelines_agree_on_the_same_weights(image_folder, checkpoints):
    # in float32 on the CPU (--bf16 off): bf16 is not the plain pipeline's float32
    # with Python's import timing on: only the plain pipeline imports torchvision (seconds of start-up)
    results = [run('main.py', '--data', image_folder, '--checkpoint', checkpoints['vgg16'], '--model', 'vgg16',
                   '--eval-only', '--device', 'cpu', '--bf16', 'off', *flag, env={'PYTHONPROFILEIMPORTTIME': '1'})
               for flag in ([], ['--plain'])]
    assert all(r.returncode == 0 for r in results), results[0].stderr[-2000:] + results[1].stderr[-2000:]
    assert results[0].stdout.splitlines()[1:] == results[1].stdout.splitlines()[1:]
    imported = [re.findall(r'^import time:.*\|\s+torchvision$', r.stderr, re.M) for r in results]
    assert not imported[0] and imported[1]


def test_help_lists_the_flags():
    r = main('--help')
    for flag in ('--model', '--checkpoint', '--data', '--epochs', '--lr', '--batch-size', '--device',
                 '--eval-only', '--out', '--seed', '--plain', '--bf16', '--report'):
        assert flag in r.stdout
    assert r.returncode == 0


@pytest.mark.parametrize('args, message', [
    (['--epochs', '0'], '--epochs: must be at least 1'),
    (['--epochs', '-3'], '--epochs: must be at least 1'),
    (['--lr', 'fast'], "--lr: 'fast' is not a number"),
    (['--lr', '-1'], '--lr: must be a positive number'),
    (['--model', 'resnet18'], "invalid choice: 'resnet18'"),
    (['--batch-size', '0'], '--batch-size: must be at least 1'),
])
def test_bad_flags_are_one_line(args, message):
    one_line_error(main(*args), re.escape(message), 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_cuda_without_a_gpu(image_folder, checkpoints):
    one_line_error(main('--device', 'cuda', '--data', image_folder, '--checkpoint', checkpoints['resnet50']),
                   'sees no CUDA GPU here; use --device cpu')


def test_data_and_checkpoint_mistakes_are_one_line(image_folder, checkpoints, tmp_path, monkeypatch):
    one_line_error(main('--data', image_folder, '--checkpoint', tmp_path / 'typo.ckpt'),
                   'checkpoint not found: .*typo.ckpt')
    one_line_error(main('--data', image_folder, '--checkpoint', checkpoints['vgg16']),
                   'is a VGG16 checkpoint, but the model is ResNet50_layer4')
    (tmp_path / 'cut.ckpt').write_bytes(open(checkpoints['resnet50'], 'rb').read()[:5000])
    one_line_error(main('--data', image_folder, '--checkpoint', tmp_path / 'cut.ckpt'), 'damaged or truncated')
    # the download is made to fail (a proxy nobody listens on), whether or not this machine has a network
    for name in ('HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy'):
        monkeypatch.setenv(name, 'http://127.0.0.1:9')
    (tmp_path / 'mine').mkdir()
    for folder in tmp_path / 'mine', tmp_path / 'typo' / 'data':
        one_line_error(main('--data', folder, '--checkpoint', checkpoints['resnet50']),
                       'no CIFAR-10 in .*could not be downloaded.*image folder')
    # the download's folders are gone again; a folder that was there before stays, as it was
    assert not (tmp_path / 'typo').exists() and list((tmp_path / 'mine').iterdir()) == []


def test_an_output_that_cannot_be_written_is_one_line_before_any_work(checkpoints, tmp_path):
    # each is refused before the checkpoint and the data are read, not after the epoch
    (tmp_path / 'a-file').write_text('kept')
    shipped = os.path.join(ROOT, PRETRAINED['resnet50'])
    before = open(shipped, 'rb').read()
    for args, message in [
            (['--out', tmp_path], r'--out .* names a folder; give a file name in it'),
            (['--out', str(tmp_path / 'new') + os.sep], r'--out .*new/ names a folder'),
            (['--out', tmp_path / 'a-file' / 'x.ckpt'], r'a-file is a file, not a folder; choose another --out'),
            (['--out', shipped], r'will not overwrite the shipped checkpoint'),
            (['--eval-only', '--report', tmp_path / 'a-file'], r'--report .*a-file is a file; give a folder')]:
        # no data there: the output is checked first, before the data and the epoch
        one_line_error(main('--data', tmp_path / 'no-data-here', '--checkpoint', checkpoints['resnet50'], *args),
                       message)
    assert (tmp_path / 'a-file').read_text() == 'kept' and open(shipped, 'rb').read() == before
    assert not (tmp_path / 'new').exists()


def test_the_default_model_is_resnet50_with_its_shipped_path(tmp_path):
    # run from another folder: the relative default path is not found there; the message says where to run
    r = main('--data', tmp_path, '--eval-only', cwd=tmp_path)
    one_line_error(r, re.escape(f'checkpoint not found: ./checkpoints/resnet50_cifar10.ckpt (looked in '
                                f'{tmp_path}') + '.*' + re.escape(f'cd {ROOT} first'))


@pytest.mark.slow
def test_ctrl_c_exits_130_and_keeps_the_earlier_output(image_folder, checkpoints, tmp_path):
    out = tmp_path / 'fine.ckpt'
    torch.save({'w': torch.zeros(3)}, out)  # an earlier run's checkpoint (--out replaces only a checkpoint)
    earlier = out.read_bytes()
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), '--data', image_folder,
                          '--checkpoint', checkpoints['resnet50'], '--out', out, '--epochs', '50',
                          '--batch-size', '3'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'),
                         # as from a terminal: a shell's background job (CI run with &) starts with Ctrl-C ignored
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p.stdout.readline()  # data loaded, training about to start
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert 'interrupted' in stderr and 'Traceback' not in stderr
    assert out.read_bytes() == earlier
    assert sorted(os.listdir(tmp_path)) == ['fine.ckpt']


@pytest.mark.slow
@pytest.mark.parametrize('plain', [False, True])
def test_vgg16_with_a_last_batch_of_one_image(image_folder, checkpoints, tmp_path, plain):
    # 300 training images at batch 299: the last batch would hold one image, which BatchNorm1d cannot train on
    r = main('--model', 'vgg16', '--batch-size', 299, '--data', image_folder, '--checkpoint', checkpoints['vgg16'],
                 '--out', tmp_path / 'v.ckpt', '--device', 'cpu', *(['--plain'] if plain else []))
    assert r.returncode == 0, r.stderr
    assert ACCURACY.search(r.stdout) and (tmp_path / 'v.ckpt').exists()


@pytest.mark.parametrize('plain', [False, True])
def test_eval_only_does_not_read_the_training_images(checkpoints, tmp_path, plain):
    root = make_image_folder(tmp_path / 'data', train_per_class=2, test_per_class=3)
    (tmp_path / 'data' / 'train' / 'cat' / '0000.png').write_bytes(b'broken')  # only the training split
    pipeline = ['--plain'] if plain else []
    r = main('--data', root, '--checkpoint', checkpoints['resnet50'], '--eval-only', *pipeline)
    assert r.returncode == 0, r.stderr
    assert '0 training and 30 test images' in r.stdout
    one_line_error(main('--data', root, '--checkpoint', checkpoints['resnet50'], *pipeline),
                   'cannot read image .*0000.png')


def test_a_diverging_fine_tune_stops_and_saves_nothing(image_folder, checkpoints, tmp_path):
    out = tmp_path / 'fine.ckpt'
    # 10 steps: caught by the check after the epoch, before anything is saved
    r = main('--data', image_folder, '--checkpoint', checkpoints['resnet50'], '--batch-size', 30,
                 '--lr', '1e30', '--out', out, '--seed', 0)
    one_line_error(r, r'the fine-tune diverged: the loss became nan at step \d+, with learning rate 1e\+30; '
                      r'the model was not saved; use a smaller --lr')
    assert not out.exists() and 'Accuracy' not in r.stdout


@pytest.mark.parametrize('device, code, message', [
    ('gpu', 2, "device 'gpu' is not a device PyTorch knows; use auto .*, cpu, cuda, cuda:N or mps"),
    ('cuda:x', 2, "is not a device PyTorch knows"),
    ('meta', 2, "runs on the CPU, CUDA GPUs or the Apple GPU"),
])
def test_device_names_pytorch_does_not_know_are_refused(device, code, message):
    one_line_error(main('--device', device), message, code)


def test_device_values_edited_into_main_are_checked_too():
    from helpers.devices import pick_device
    from helpers.flags import UsageError
    assert pick_device('CPU') == torch.device('cpu')
    with pytest.raises(UsageError, match="device 'gpu' is not a device PyTorch knows; use auto .*, cpu, cuda, cuda:N or mps"):
        pick_device('gpu')
    with pytest.raises(UsageError, match="runs on the CPU, CUDA GPUs or the Apple GPU"):
        pick_device('meta')
    count = torch.cuda.device_count()
    with pytest.raises(UsageError, match='no CUDA GPU here' if count == 0 else f'has {count} CUDA GPU'):
        pick_device(f'cuda:{count}')  # one past the last GPU (or any, without one)


def own_network_main(tmp_path, path, forward='self.fc(x.flatten(1))', classes=10):
    """main.py with its "Choose model" lines edited to a student's own small network."""
    text = open(os.path.join(ROOT, 'main.py')).read()
    text = text.replace("model = ResNet50_layer4()\nPATH = './checkpoints/resnet50_cifar10.ckpt'",
                        "import torch.nn as nn\n"
                        "class MyNet(nn.Module):\n"
                        "    def __init__(self):\n"
                        "        super().__init__()\n"
                        "        self.conv = nn.Conv2d(3, 3, 3, padding=1)\n"
                        f"        self.fc = nn.Linear(3 * 32 * 32, {classes})\n"
                        "    def forward(self, x):\n"
                        f"        return {forward}\n"
                        f"model = MyNet()\nPATH = {str(path)!r}")
    assert 'MyNet()' in text
    (tmp_path / 'main.py').write_text(text)
    return str(tmp_path / 'main.py')


def test_a_students_own_network_runs_from_scratch_then_from_its_checkpoint(image_folder, tmp_path):
    script = own_network_main(tmp_path, tmp_path / 'mynet.ckpt')
    r = main('--data', image_folder, '--out', tmp_path / 'mynet.ckpt', '--batch-size', 10, '--seed', 0,
          script=script)
    assert r.returncode == 0, r.stderr
    assert 'MyNet starts from random weights' in r.stdout and ACCURACY.search(r.stdout)
    r = main('--data', image_folder, '--eval-only', script=script)
    assert r.returncode == 0, r.stderr
    assert 'MyNet from ' + str(tmp_path / 'mynet.ckpt') in r.stdout
    r = main('--data', image_folder, '--eval-only', '--checkpoint', tmp_path / 'nothing.ckpt', script=script)
    assert 'starts from random weights' in r.stdout
    # a checkpoint of another network is refused in one line
    torch.save({'w': torch.zeros(1)}, tmp_path / 'other.ckpt')
    one_line_error(main('--data', image_folder, '--eval-only', '--checkpoint', tmp_path / 'other.ckpt',
                            script=script), 'does not fit MyNet')


def test_vgg16_cannot_train_on_batches_of_one(image_folder, checkpoints):
    one_line_error(main('--model', 'vgg16', '--batch-size', 1, '--data', image_folder,
                            '--checkpoint', checkpoints['vgg16']), '--batch-size 1 cannot train VGG16')


def shipped_vgg16():
    model = MODELS['vgg16']()
    load_checkpoint(model, os.path.join(ROOT, PRETRAINED['vgg16']))
    return model


def test_a_batch_too_large_for_the_scaled_vgg16_is_one_line_before_any_data(tmp_path):
    # the shipped VGG16's head BatchNorm would overflow float32 and output zeros: stop, do not train on
    model = shipped_vgg16()
    limit = largest_safe_batch(model)
    r = main('--model', 'vgg16', '--batch-size', limit + 1, '--data', tmp_path / 'no-data-here', '--out',
                 tmp_path / 'o.ckpt')
    one_line_error(r, rf'--batch-size {limit + 1} is too large for this checkpoint.*use --batch-size {limit} or less')
    assert not (tmp_path / 'o.ckpt').exists()


@pytest.mark.parametrize('variance', [3e38, float('inf')])
def test_a_vgg16_whose_head_statistics_overflowed_cannot_be_fine_tuned(tmp_path, variance):
    # a checkpoint saved after its head BatchNorm overflowed: no batch size is safe, so none is offered
    model = shipped_vgg16()
    model.classifier[2].running_var[7] = variance
    torch.save(model.state_dict(), tmp_path / 'overflowed.ckpt')
    r = main('--model', 'vgg16', '--checkpoint', tmp_path / 'overflowed.ckpt', '--data', tmp_path / 'no-data-here',
                 '--out', tmp_path / 'o.ckpt')
    one_line_error(r, 'cannot be fine-tuned at any batch size.*use --eval-only')
    assert not (tmp_path / 'o.ckpt').exists()


@pytest.mark.slow
def test_a_mistake_ends_a_real_process_in_one_line(tmp_path):
    # what the tests in this process cannot show: the excepthook's exit code and no traceback
    one_line_error(run('main.py', '--data', tmp_path, '--checkpoint', tmp_path / 'typo.ckpt'),
                   'checkpoint not found: .*typo.ckpt')


def test_a_students_network_that_views_its_input_runs_and_one_with_other_than_ten_outputs_is_named(image_folder,
                                                                                                    tmp_path):
    # x.view needs contiguous NCHW memory: the fast path gives a student's own network no channels_last input
    script = own_network_main(tmp_path, tmp_path / 'none.ckpt', forward='self.fc(self.conv(x).view(x.size(0), -1))')
    r = main('--data', image_folder, '--out', tmp_path / 'mynet.ckpt', '--batch-size', 50, script=script)
    assert r.returncode == 0, r.stderr
    assert ACCURACY.search(r.stdout)
    script = own_network_main(tmp_path, tmp_path / 'none.ckpt', classes=12)
    one_line_error(main('--data', tmp_path / 'no-data-here', '--eval-only', script=script),
                   r'MyNet gives outputs of shape \(2, 12\) for 2 images; CIFAR-10 needs \(2, 10\)')


@pytest.mark.parametrize('args, message', [
    (['--seed', str(2 ** 64)], f'--seed: must be at most {2 ** 64 - 1}'),
    (['--batch-size', str(2 ** 40)], '--batch-size: must be at most 2147483647'),
])
def test_numbers_too_large_for_torch_are_one_line(args, message):
    one_line_error(main(*args), re.escape(message), 2)


# ---- the file's settings, paths and flags a student gets wrong (issue 41) ----

def edited_main(tmp_path, **settings):
    """main.py with settings at its top edited, as a student edits them."""
    text = open(os.path.join(ROOT, 'main.py'), encoding='utf-8').read()
    for name, value in settings.items():
        line = re.search(rf'^{name} = .*$', text, re.M)
        assert line, name
        text = text.replace(line.group(0), f'{name} = {value}', 1)
    (tmp_path / 'main.py').write_text(text, encoding='utf-8')
    return str(tmp_path / 'main.py')


@pytest.mark.parametrize('setting, value, says', [
    ('batch_size', '0', r"batch_size = 0 at the top of main.py: must be at least 1, not 0"),
    ('batch_size', '64.0', r"batch_size = 64.0 at the top of main.py: '64.0' is not a whole number"),
    ('num_epochs', '0', r"num_epochs = 0 at the top of main.py: must be at least 1, not 0"),
    ('learning_rate', '0', r"learning_rate = 0 at the top of main.py: must be a positive number, not 0"),
    ('bf16', 'True', r"bf16 = True at the top of main.py: use 'auto' or 'off'"),
    ('report', 'True', r"report = True at the top of main.py: give a path in quotes, e\.g\. report = 'outputs/run1'"),
    ('out', 'True', r"out = True at the top of main.py: give a path in quotes"),
    ('eval_only', "'yes'", r"eval_only = 'yes' at the top of main.py: use True or False"),
])
def test_settings_edited_at_the_top_get_the_checks_their_flags_get(tmp_path, setting, value, says):
    one_line_error(main(script=edited_main(tmp_path, **{setting: value})), says)


@pytest.mark.parametrize('setting, value, says', [
    ('data_dir', 'None', r"data_dir = None at the top of main.py: give a path in quotes"),
    ('PATH', '1', r"PATH = 1 at the top of main.py: give the checkpoint's path in quotes, .* or None for random"),
])
def test_paths_set_to_something_else_than_a_path_are_one_line(tmp_path, setting, value, says):
    one_line_error(main('--eval-only', script=edited_main(tmp_path, **{setting: value})), says)


def test_the_courses_own_device_line_and_path_none_work(tmp_path, image_folder):
    script = edited_main(tmp_path, device="torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
                         PATH='None')
    r = main('--eval-only', '--data', image_folder, script=script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('note: PATH is None, so resnet50 starts from random weights')


@pytest.mark.parametrize('flag', ['--out', '--report'])
def test_an_empty_output_name_is_one_line(flag):
    one_line_error(main(flag, ''), rf"{flag} '' is empty")


def test_one_split_of_an_image_folder_as_data_names_its_parent(image_folder, checkpoints):
    one_line_error(main('--eval-only', '--data', os.path.join(image_folder, 'test'), '--checkpoint',
                        checkpoints['resnet50']),
                   rf"holds class folders \(airplane, automobile, bird, ...\): it is one split of an image folder; "
                   rf"pass --data {re.escape(os.path.abspath(image_folder))}, which")


def test_a_flag_still_overrides_a_setting_the_file_got_wrong(tmp_path, image_folder, checkpoints):
    r = main('--batch-size', 10, '--eval-only', '--data', image_folder, '--checkpoint', checkpoints['resnet50'],
             script=edited_main(tmp_path, batch_size='0'))
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_tilde_is_the_home_folder_in_flags_and_settings(tmp_path, image_folder, checkpoints, monkeypatch):
    # the shell leaves '~' alone inside quotes, and main.py's settings are never seen by a shell
    home = tmp_path / 'home'
    (home / 'ckpts').mkdir(parents=True)
    os.symlink(image_folder, home / 'cifar')
    torch.save(torch.load(checkpoints['resnet50']), home / 'ckpts' / 'r.ckpt')
    monkeypatch.setenv('HOME', str(home))
    r = main('--data', '~/cifar', '--checkpoint', '~/ckpts/r.ckpt', '--out', '~/results/m.ckpt', '--batch-size', 10,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (home / 'results' / 'm.ckpt').is_file() and not (tmp_path / '~').exists()
    assert f'Saved the fine-tuned model to {home}/results/m.ckpt' in r.stdout


@pytest.mark.parametrize('flags, says', [
    (['--epochs', 5], r'--epochs does nothing with --eval-only, which only tests the checkpoint'),
    (['--lr', 0.01, '--out', 'x.ckpt'], r'--lr and --out do nothing with --eval-only'),
])
def test_flags_that_eval_only_would_ignore_are_refused(flags, says):
    one_line_error(main('--eval-only', *flags), says)


def test_main_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    one_line_error(main('--eval-only'), r'main.py runs as one process .*torchrun is for train.py')


def test_out_never_replaces_a_file_that_is_not_a_checkpoint(tmp_path, checkpoints):
    source = tmp_path / 'model.py'
    source.write_text('# my network\n')
    one_line_error(main('--out', source, '--checkpoint', checkpoints['resnet50']),
                   r"--out \S*model.py is a file that is not a checkpoint, and --out replaces only a checkpoint")
    assert source.read_text() == '# my network\n'


@pytest.mark.parametrize('where', ['docs', 'checkpoints', '.'])
def test_a_report_into_the_projects_own_folders_is_refused_before_any_work(where, checkpoints):
    r = main('--eval-only', '--report', os.path.join(ROOT, where), '--checkpoint', checkpoints['resnet50'])
    assert r.returncode == 1 and r.stdout == '', r.stdout + r.stderr
    one_line_error(r, r'--report|report')
