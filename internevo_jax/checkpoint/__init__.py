"""Checkpoints: orbax-based saving and resuming, local and S3 storage, stop file and signals."""

from internevo_jax.checkpoint.content import CONTENT_ALL, normalize_content
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.layout import MARKER, CheckpointRef, Scan
from internevo_jax.checkpoint.manager import CheckpointManager, build_checkpoint_manager, files_for
from internevo_jax.checkpoint.restore import read_checkpoint
from internevo_jax.checkpoint.stopfile import StopFile
from internevo_jax.checkpoint.storage import LocalLocation, S3Location, S3Settings, parse_location

__all__ = [
    "CONTENT_ALL",
    "MARKER",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointRef",
    "LocalLocation",
    "S3Location",
    "S3Settings",
    "Scan",
    "StopFile",
    "build_checkpoint_manager",
    "files_for",
    "normalize_content",
    "parse_location",
    "read_checkpoint",
]
