"""TensorBoard event files of every step and validation record, written by tensorboardX.

Tags are the record's keys (`loss`, `lr`, `grad_norm`, `val/<set>_loss`, ...), as InternEvo names
them, except `tgs (tokens/gpu/second)`, which is `tgs` (TensorBoard tags hold no spaces or
parentheses). Values that are not finite (an unknown MFU, a NaN loss) are left out: the metrics line
and the JSONL file show them, TensorBoard draws a gap. The TensorBoard step is the number of steps done (InternEvo's
step_count): the metrics line's `step` + 1, and a validation record's `step` as it is.

The folder does not depend on the launch time, so a resumed run writes into the folder of the run it
continues. Its new event file starts with a purge marker at the first step it trains: TensorBoard
then drops the events the interrupted run logged past its last checkpoint (they are trained again),
and no step appears twice.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Mapping

from internevo_jax.monitor.record import TGS_KEY
from internevo_jax.monitor.writers import logger

TAGS = {TGS_KEY: "tgs"}  # record keys that are not valid TensorBoard tags
FLUSH_SECS = 30  # tensorboardX's own flush thread: a backstop when steps are slower than this


class TensorBoardWriter:
    """A metrics writer (`write(record, kind)`, `close()`) of TensorBoard scalars.

    `first_step` is the TensorBoard step of the first record this run writes (steps done + 1 at
    the start); `queue_max_length` steps are held in memory before they are flushed to disk."""

    def __init__(
        self,
        folder: str,
        *,
        first_step: int,
        queue_max_length: int = 1,
        texts: Mapping[str, str] | None = None,
    ):
        from tensorboardX import SummaryWriter

        self.folder = folder
        self.queue_max_length = queue_max_length
        self.held: list[tuple[str, float, int]] = []  # (tag, value, step) not yet handed to tensorboardX
        self._steps_held = 0
        # the file name holds the start time in seconds: the suffix keeps two starts within one
        # second (a quick restart) from writing into the same file
        self._writer = SummaryWriter(
            logdir=folder, purge_step=first_step, flush_secs=FLUSH_SECS, filename_suffix=f".{time.time_ns()}"
        )
        for tag, text in (texts or {}).items():
            self._writer.add_text(tag, text, global_step=first_step)

    def write(self, record: Mapping[str, object], kind: str = "step") -> None:
        step = int(record["step"]) + (1 if kind == "step" else 0)
        for key, value in record.items():
            if key != "step" and _is_finite_number(value):
                self.held.append((TAGS.get(key, key), float(value), step))
        if kind == "step":
            self._steps_held += 1
            if self._steps_held >= self.queue_max_length:
                self._hand_over()

    def close(self) -> None:
        self._hand_over()
        self._writer.close()

    def _hand_over(self) -> None:
        # as InternEvo's writer does: scalars are held for queue_max_length steps, then written
        for tag, value, step in self.held:
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()
        self.held, self._steps_held = [], 0


def _is_finite_number(value: object) -> bool:
    # bools are ints in Python, but a flag is not a curve; per-layer lists go to the JSONL file
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_texts(config_json: str) -> dict[str, str]:
    """The texts InternEvo adds at the start of a run: the command line and the config."""
    return {"cmd": " ".join(sys.argv), "config": f"```\n{config_json}\n```"}


def copy_previous_events(resume_tb_folder: str | None, folder: str) -> None:
    """InternEvo's `resume_tb_folder`: the event files of an earlier run are copied into this run's
    folder once, so its curves continue there. A missing folder is reported and skipped."""
    if not resume_tb_folder or os.path.abspath(resume_tb_folder) == os.path.abspath(folder):
        return
    if not os.path.isdir(resume_tb_folder):
        logger.warning(
            "resume_tb_folder %s does not exist: TensorBoard starts without the earlier run's events",
            resume_tb_folder,
        )
        return
    marker = os.path.join(folder, ".copied_from_resume_tb_folder")
    if os.path.exists(marker):  # a restart of this run: the copy is already there
        return
    shutil.copytree(resume_tb_folder, folder, dirs_exist_ok=True)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(os.path.abspath(resume_tb_folder) + "\n")
    logger.info("TensorBoard events of %s copied into %s", resume_tb_folder, folder)
