"""agree_max over two real jax.distributed processes: the element-wise maximum, round after round,
through the runtime's key-value store (no device collective, so it never waits for queued steps)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ckpt_helpers import REPO, free_port

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]))
    from internevo_jax.checkpoint import distributed
    from internevo_jax.checkpoint.deadlines import Deadline
    rank = jax.process_index()
    limit = Deadline(60, "ckpt.agreement_timeout_s")
    out = [distributed.agree_max([rank * (r + 1), 10 - rank, r], limit) for r in range(4)]
    print("PRIMARY", distributed.from_primary([7 + rank, rank], limit), flush=True)
    print("RESULT", out, flush=True)
    """
)


def test_agree_max_over_two_processes(tmp_path):
    port = free_port()
    env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(port), str(rank)],
            cwd=REPO,
            env={**env, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    expected = str([[r + 1, 10, r] for r in range(4)])
    for text in outputs:
        assert f"RESULT {expected}" in text, text[-2000:]
        assert "PRIMARY [7, 0]" in text, text[-2000:]
