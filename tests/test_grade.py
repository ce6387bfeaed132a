"""grade.py on a fake class: tiny test data, random VGG16/ResNet50_layer4 weights in every form a class hands in."""
import csv
import functools
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
from PIL import Image

import grade
import scripts
from conftest import make_image_folder, symlink_or_skip
from helpers import checkpoints
from helpers.checkpoints import MODELS


class Opens:  # pickled code: unpickling it would create the file `path`
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


@functools.cache
def random_vgg():
    torch.manual_seed(0)
    return MODELS['vgg16']().state_dict()


def vgg(seed):  # other weights for each seed without building another VGG16; float16 halves the bytes to read
    return {k: (v * (1 + seed / 64)).half() if v.is_floating_point() else v for k, v in random_vgg().items()}


def listing(folder):
    return {os.path.relpath(os.path.join(d, n), folder): (os.path.getsize(os.path.join(d, n)),
                                                         os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, dirs, names in os.walk(folder) for n in names + dirs}


def read(out):
    with open(out, encoding='utf-8-sig', newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('data'), train_per_class=1, test_per_class=1)


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
    """The shipped ResNet50_layer4, and a random VGG16 in the shipped VGG16's place (grade.py reads PRETRAINED)."""
    torch.save(vgg(9), path := tmp_path_factory.mktemp('shipped') / 'vgg16.ckpt')
    return {'resnet50': os.path.join(scripts.ROOT, checkpoints.PRETRAINED['resnet50']), 'vgg16': str(path)}


def make_class(root, shipped):
    """A class as a course site hands it out: flat files, a folder and a zip per student, and every bad kind."""
    def save(obj, name):
        os.makedirs(os.path.dirname(root / name), exist_ok=True)
        torch.save(obj, root / name)
    torch.manual_seed(0)
    base = torch.load(shipped['resnet50'])
    moved = {k: v + v.float().std() / 8 * torch.randn(v.shape) if v.is_floating_point() else v for k, v in base.items()}
    save(moved, 'kim_12345_67890_resnet50_final.ckpt')  # "fine-tuned": each weight moved, in float32
    save({k: v + (v - base[k]) / 4 * torch.randn(v.shape) if v.is_floating_point() else v for k, v in moved.items()},
         'ahn_1_2_resnet50_final.ckpt')  # kim's, moved on by a quarter of kim's change: a near copy
    folder = 'Kim Minji_123_assignsubmission_file_/outputs/'
    save(vgg(1), folder + 'vgg16_final.ckpt')
    save(vgg(2), folder + 'vgg16_epoch20.ckpt')
    save(vgg(3), 'tmp.ckpt')
    with zipfile.ZipFile(root / '김민지_2023_vgg16.zip', 'w') as z:
        z.write(root / 'tmp.ckpt', 'project/outputs/vgg16_final.ckpt')
        z.writestr('__MACOSX/project/outputs/._vgg16_final.ckpt', b'\0\5\26\7')
        z.writestr('project/main.py', 'print("never run")\n')
    os.replace(root / 'tmp.ckpt', root / 'lee_1_2_vgg16.pth')  # the same bytes as 김민지's
    save({f'module.{k}': v for k, v in vgg(1).items()}, 'jung_1_2_vgg16.ckpt')  # Kim Minji's, re-saved
    shutil.copy(shipped['vgg16'], root / 'park_1_2_vgg16.ckpt')
    save({'state_dict': vgg(9), 'epoch': 1}, 'choi_1_2_vgg16.pt')  # the shipped VGG16, re-saved
    with open(root / 'han_1_2_vgg16.ckpt', 'wb') as f:
        f.write((root / 'jung_1_2_vgg16.ckpt').read_bytes()[:5000])
    save(Opens(str(root.parent / 'MARKER')), 'yoon_1_2_model.pt')
    save({'acc': 91.0}, 'kang_1_2_notes.pt')
    save(vgg(4), 'cho_1_2_resnet50_final.ckpt')
    for value, name in ((torch.tensor(float('nan')), 'lim_1_2_vgg16.ckpt'),
                        (torch.tensor(1e6).half(), 'song_1_2_vgg16.ckpt')):  # one value expanded: bytes, not MBs
        save({k: value.expand(v.shape) if v.is_floating_point() else v for k, v in vgg(5).items()}, name)
    save({'fc.weight': torch.zeros(10, 5)}, 'kwon_1_2_mine.pth')
    os.makedirs(root / 'Oh Empty_5_assignsubmission_file_')
    with zipfile.ZipFile(root / 'seo.zip', 'w') as z:
        z.writestr('seo/main.py', 'import os\n')
    with zipfile.ZipFile(root / 'gang.zip', 'w') as z:  # member names that would write outside if used as paths
        z.writestr('../../gang_vgg16.ckpt', b'not a checkpoint')
        z.writestr('/tmp/gang_vgg16.pt', b'not a checkpoint')
    with open(root / 'big_1_2_vgg16.ckpt', 'wb') as f:
        f.truncate(grade.LIMIT + 1)  # sparse: nothing is written
    return root


@pytest.fixture(scope='module')
def graded(tmp_path_factory, tiny_data, shipped):
    """The class graded once: (its folder, the rows by file, stdout, the listing before and after)."""
    root = make_class(tmp_path_factory.mktemp('class') / 'submissions', shipped)
    before, out = listing(root), root.parent / 'grades.csv'
    with pytest.MonkeyPatch.context() as m:
        m.setattr(checkpoints, 'PRETRAINED', shipped)
        r = scripts.in_process('grade.py', root, '--data', tiny_data, '--out', out)
    assert r.returncode == 0, r.stderr
    return root, {row['file']: row for row in read(out)}, r.stdout, before, listing(root)


def test_every_file_of_the_class_is_a_row_and_nothing_inside_changes(graded):
    root, rows, stdout, before, after = graded
    assert before == after and not (root.parent / 'MARKER').exists()
    assert sorted(rows) == sorted([
        'kim_12345_67890_resnet50_final.ckpt', 'ahn_1_2_resnet50_final.ckpt',
        'Kim Minji_123_assignsubmission_file_/outputs/vgg16_epoch20.ckpt',
        'Kim Minji_123_assignsubmission_file_/outputs/vgg16_final.ckpt',
        '김민지_2023_vgg16.zip/project/outputs/vgg16_final.ckpt', 'lee_1_2_vgg16.pth', 'jung_1_2_vgg16.ckpt',
        'park_1_2_vgg16.ckpt', 'choi_1_2_vgg16.pt', 'han_1_2_vgg16.ckpt', 'yoon_1_2_model.pt', 'kang_1_2_notes.pt',
        'cho_1_2_resnet50_final.ckpt', 'lim_1_2_vgg16.ckpt', 'song_1_2_vgg16.ckpt', 'kwon_1_2_mine.pth',
        'Oh Empty_5_assignsubmission_file_', 'seo.zip', 'big_1_2_vgg16.ckpt', 'gang.zip/../../gang_vgg16.ckpt',
        'gang.zip//tmp/gang_vgg16.pt'])
    assert not any(os.path.exists(p) for p in ('/tmp/gang_vgg16.pt', root.parent.parent / 'gang_vgg16.ckpt'))
    assert rows['김민지_2023_vgg16.zip/project/outputs/vgg16_final.ckpt']['student'] == '김민지'
    assert '김민지' in stdout and 'Kim Minji' in stdout


@pytest.mark.parametrize('file, student, model, flags, note', [
    ('kim_12345_67890_resnet50_final.ckpt', 'kim', 'ResNet50_layer4', 'near copy of ahn', ''),
    ('ahn_1_2_resnet50_final.ckpt', 'ahn', 'ResNet50_layer4', 'near copy of kim', ''),
    ('Kim Minji_123_assignsubmission_file_/outputs/vgg16_final.ckpt', 'Kim Minji', 'VGG16',
     'one of 2 files; same as jung', ''),
    ('Kim Minji_123_assignsubmission_file_/outputs/vgg16_epoch20.ckpt', 'Kim Minji', 'VGG16', 'one of 2 files', ''),
    ('lee_1_2_vgg16.pth', 'lee', 'VGG16', 'same as 김민지', ''),
    ('jung_1_2_vgg16.ckpt', 'jung', 'VGG16', 'same as Kim Minji', ''),
    ('park_1_2_vgg16.ckpt', 'park', 'VGG16', 'shipped', ''),
    ('choi_1_2_vgg16.pt', 'choi', 'VGG16', 'shipped', ''),
    ('cho_1_2_resnet50_final.ckpt', 'cho', 'VGG16', '', 'named resnet50 but holds VGG16 weights'),
    ('han_1_2_vgg16.ckpt', 'han', '', '', 'not a PyTorch checkpoint, or is damaged'),
    ('yoon_1_2_model.pt', 'yoon', '', '', 'pickled code or objects (io.open)'),
    ('kang_1_2_notes.pt', 'kang', '', '', "not a state dict (it holds a dict of 'acc')"),
    ('lim_1_2_vgg16.ckpt', 'lim', 'VGG16', '', 'NaN or infinite weights'),
    ('song_1_2_vgg16.ckpt', 'song', 'VGG16', '', 'saved in float16'),
    ('kwon_1_2_mine.pth', 'kwon', '', '', 'neither a VGG16 nor a ResNet50_layer4'),
    ('Oh Empty_5_assignsubmission_file_', 'Oh Empty', '', '', 'no checkpoint'),
    ('seo.zip', 'seo', '', '', 'no checkpoint'),
    ('big_1_2_vgg16.ckpt', 'big', '', '', 'over the 1 GB'),
    ('gang.zip/../../gang_vgg16.ckpt', 'gang', '', 'one of 2 files', 'not a PyTorch checkpoint'),
])
def test_each_submission_gets_its_student_model_flags_and_note(graded, file, student, model, flags, note):
    row = graded[1][file]
    assert (row['student'], row['model'], row['flags']) == (student, model, flags)
    assert note in row['note'] and bool(note) == bool(row['note'])
    assert bool(row['accuracy']) == (model != '' and 'NaN' not in note and 'float16' not in note)


def test_accuracies_equal_main_eval_only_bf16_off_and_the_csv_opens_in_excel(graded, tiny_data):
    root, rows = graded[:2]
    for file, model in (('kim_12345_67890_resnet50_final.ckpt', 'resnet50'), ('lee_1_2_vgg16.pth', 'vgg16')):
        r = scripts.main('--eval-only', '--bf16', 'off', '--model', model, '--checkpoint', root / file,
                         '--data', tiny_data)
        assert scripts.ACCURACY.search(r.stdout).group(1) == rows[file]['accuracy'], r.stdout + r.stderr
        assert rows[file]['precision'].startswith('float32, test data ') and rows[file]['total'] == '10'
    assert (root.parent / 'grades.csv').read_bytes().startswith(grade.HEADER + b'\r\n')
    with Image.open(root.parent / 'grades.png') as im:
        assert im.format == 'PNG' and im.size[0] >= 800


def test_an_interrupted_grading_rerun_loses_and_repeats_no_row_until_the_test_data_changes(tmp_path, monkeypatch):
    root, out, calls, evaluate = tmp_path / 'class', tmp_path / 'grades.csv', [], grade.evaluate
    root.mkdir()
    for i, name in enumerate(['a_1_2_vgg16.ckpt', 'b_1_2_vgg16.ckpt']):
        torch.save(vgg(20 + i), root / name)
    (root / 'c_1_2_vgg16.pt').write_bytes(b'not a checkpoint')
    monkeypatch.setattr(checkpoints, 'PRETRAINED', {})

    def counted(*args):
        calls.append(args)
        if len(calls) == 2 and stop:
            raise SystemExit(130)  # as Ctrl-C does, during the second checkpoint
        return evaluate(*args)
    monkeypatch.setattr(grade, 'evaluate', counted)
    monkeypatch.setattr(grade, 'draw', lambda *args: None)  # drawn in the test of the whole class
    d = make_image_folder(tmp_path / 'data', train_per_class=1, test_per_class=1)
    argv, stop = [str(root), '--data', d, '--out', str(out)], True
    with pytest.raises(SystemExit):
        grade.main(argv)
    first = read(out)
    assert [r['file'] for r in first if r['accuracy']] == ['a_1_2_vgg16.ckpt']
    calls[:], stop = [], False
    grade.main(argv)
    rows = read(out)
    assert [r['file'] for r in rows] == sorted(os.listdir(root)) and len(calls) == 1  # b alone
    assert rows[0] == first[0] and rows[1]['accuracy'] and not rows[2]['accuracy']
    with Image.open(path := os.path.join(d, 'test', 'cat', '0000.png')) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)  # one test image changed: every row again
    grade.main(argv)
    assert len(calls) == 3 and [r['file'] for r in read(out)] == [r['file'] for r in rows]
    assert read(out)[0]['precision'] not in (rows[0]['precision'], '')


def test_a_link_leading_out_of_the_class_is_a_row_never_followed(tmp_path, tiny_data, monkeypatch):
    (tmp_path / 'class').mkdir()
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'vgg16_final.ckpt').write_bytes(b'never read')
    symlink_or_skip(tmp_path / 'elsewhere', tmp_path / 'class' / 'e_1_2_link')
    monkeypatch.setattr(checkpoints, 'PRETRAINED', {})
    monkeypatch.setattr(grade, 'draw', lambda *args: None)
    grade.main([str(tmp_path / 'class'), '--data', tiny_data, '--out', str(tmp_path / 'grades.csv')])
    row, = read(tmp_path / 'grades.csv')
    assert (row['file'], row['student'], row['note']) == ('e_1_2_link', 'e', 'a link leading outside SUBMISSIONS; '
                                                                               'not followed')


@pytest.mark.parametrize('out, says', [
    ('{root}/grades.csv', 'is inside .*, where nothing is written'),
    ('{tmp}/grades.txt', 'give a file name ending in .csv'),
    ('{tmp}/marks.csv', 'is a file of another kind'),
])
def test_the_table_never_goes_inside_the_class_nor_over_another_file(tmp_path, out, says):
    (root := tmp_path / 'class').mkdir()
    (tmp_path / 'marks.csv').write_text('student,mark\nkim,90\n')
    before = listing(tmp_path)
    r = scripts.in_process('grade.py', root, '--out', out.format(root=root, tmp=tmp_path))
    scripts.one_line_error(r, says)
    assert listing(tmp_path) == before


def test_a_zip_of_the_whole_class_is_told_to_be_unpacked(tmp_path):
    (tmp_path / 'class.zip').write_bytes(b'PK\5\6' + bytes(18))
    scripts.one_line_error(scripts.in_process('grade.py', tmp_path / 'class.zip'), "is a file; .*unpack")


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_with_two_processes_writes_the_table_of_one(tmp_path, tiny_data):
    root = make_class(tmp_path / 'class', {n: os.path.join(scripts.ROOT, p) for n, p in checkpoints.PRETRAINED.items()})
    one = scripts.run('grade.py', root, '--data', tiny_data, '--out', tmp_path / 'one.csv')
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
                          os.path.join(scripts.ROOT, 'grade.py'), root, '--data', tiny_data, '--out',
                          tmp_path / 'two.csv'], cwd=scripts.ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    rows = [[{k: v for k, v in r.items() if k != 'seconds'} for r in read(tmp_path / f)] for f in ('one.csv',
                                                                                                   'two.csv')]
    assert rows[0] == rows[1] and len(rows[0]) == 21 and two.stdout.count('Wrote') == 1
