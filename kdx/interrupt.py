"""Stopping a trial on SIGTERM / SIGINT / SIGUSR1 so that the next launch resumes it.

While a trial runs, these signals only raise a flag. Training stops at the end of the current
batch (`DistillationModule`'s batch-end hooks call `stop_if_requested`) by raising
`TrialInterrupted`; the trial is recorded `interrupted` and exits with 128 + the signal's number.
SIGUSR1 is the signal SLURM sends ahead of a time limit with `#SBATCH --signal=USR1@120`
(Lightning's convention too).

What a resumed run continues from is the phase's newest validation checkpoint (`last.ckpt`,
rewritten at every validation): a resume from there replays the uninterrupted run exactly (see
kdx/resume.py), where a checkpoint cut in the middle of an epoch would not (the data order and the
random state inside an epoch are not in a checkpoint). So a signal loses at most the work since
the last validation; `trainer.val_check_interval` shortens that interval for long epochs.
"""

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_received: list[int] = []


class TrialInterrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def requested() -> int | None:
    """The signal received since the trial started, if any."""
    return _received[0] if _received else None


def stop_if_requested() -> None:
    if _received:
        raise TrialInterrupted(_received[0])


def _handler(signum, frame):
    if signum == signal.SIGINT and signal.SIGINT in _received:
        raise KeyboardInterrupt   # a second Ctrl-C: stop now
    _received.append(signum)
    print(f"\n[kdx] {signal.Signals(signum).name} received: stopping after this batch "
          "(the trial resumes from its last checkpoint when launched again)", flush=True)


@contextmanager
def signals_stop_the_trial():
    """Within this block the SIGNALS stop the trial at the next batch instead of killing it."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():   # handlers live in the main thread only
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        _received.clear()

