"""Run control beside the training loop: the stop file and SIGTERM/SIGINT, as save / save-and-exit requests."""

from internevo_jax.trainer.run_control.control import Poll, RunControl
from internevo_jax.trainer.run_control.signals import SignalCatcher
from internevo_jax.trainer.run_control.stopfile import SAVE, SAVE_AND_EXIT, StopFile

__all__ = ["SAVE", "SAVE_AND_EXIT", "Poll", "RunControl", "SignalCatcher", "StopFile"]
