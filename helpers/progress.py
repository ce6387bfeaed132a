"""Progress through an epoch or a test pass, wherever the output goes.

tqdm's bar in a terminal, and its notebook bar in Jupyter and Colab (whose
output is no terminal, so a plain tqdm would hide itself there); where output
is not a terminal otherwise (an IDE's console, a log file), a line every
tenth of a training epoch, so a CPU epoch of minutes is never silent.
"""
import sys

from tqdm import tqdm
from tqdm.auto import tqdm as notebook_tqdm

from helpers.errors import ipython_shell


def in_notebook_kernel():
    shell = ipython_shell()
    return shell is not None and hasattr(shell, 'kernel')  # a Jupyter/Colab kernel, not a terminal IPython


def progress(iterable, desc, tenths=True):
    """`iterable`, showing how far it has gone (`tenths`: a line every tenth where there is no bar)."""
    if in_notebook_kernel():
        return notebook_tqdm(iterable, desc=desc, leave=False)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, leave=False)
    return _in_tenths(iterable, desc) if tenths else iterable


def _in_tenths(iterable, desc):
    total, shown = len(iterable), 0
    for step, item in enumerate(iterable, 1):
        yield item
        if step * 10 >= (shown + 1) * total and step < total:
            shown = step * 10 // total
            # with the loss lines, in the same order; no times, so that a seed's output is the same every run
            print(f'{desc}: {step}/{total} steps ({100 * step // total} %)', flush=True)
