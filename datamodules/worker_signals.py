"""Signals in DataLoader worker processes.

On a cluster, SIGTERM and SIGUSR1 go to every process of the job step: the workers as well as the
training process. The training process answers them (checkpoint at the next step boundary, then
exit); a worker must not die first, or the DataLoader fails the step with "worker killed by signal"
before the checkpoint is written. But the DataLoader itself stops a stuck worker with SIGTERM when it
shuts down, and a worker that ignored that would hang the exit.

So a worker ignores SIGUSR1, and takes SIGTERM in a dedicated thread (`sigwaitinfo`, which tells the
sender): from its parent (the DataLoader's shutdown) it exits at once, from anyone else it is logged
and left to the training process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _wait_for_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:  # the DataLoader stops us (or it is gone)
            os._exit(0)
        print(f"[data worker {os.getpid()}] SIGTERM from pid {info.si_pid} left to the training process",
              file=sys.stderr, flush=True)


def protect_worker_from_job_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: see the module docstring. Runs before the worker starts any thread
    of its own, so every later thread inherits the blocked SIGTERM."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX: leave SIGTERM as it is
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_wait_for_sigterm, args=(os.getppid(),), daemon=True,
                     name="sigterm-from-parent").start()
