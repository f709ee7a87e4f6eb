"""Launching a test's worker processes with torchrun on this machine (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun(nproc: int, args: list[str], env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone` with `nproc` workers running `args`.

    Why --standalone: the rendezvous takes a free port, so two suites (or two tests) running
    at once never collide on a fixed --master_port (EADDRINUSE). One thread per worker; the
    checkout on the workers' path."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1",
                    PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
                    **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), *args]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
