"""Checkpoints: orbax-based saving and reading of the train state, local and S3 storage, the save policy."""

from internevo_jax.checkpoint.content import CONTENT_ALL, normalize_content
from internevo_jax.checkpoint.errors import CheckpointError
from internevo_jax.checkpoint.files import files_for
from internevo_jax.checkpoint.layout import MARKER, CheckpointRef, Scan
from internevo_jax.checkpoint.manager import CheckpointManager, build_checkpoint_manager
from internevo_jax.checkpoint.policy import Request, SaveSettings, save_slot
from internevo_jax.checkpoint.reading import Restored
from internevo_jax.checkpoint.restore import read_checkpoint
from internevo_jax.checkpoint.storage import LocalLocation, S3Location, S3Settings, parse_location

__all__ = [
    "CONTENT_ALL",
    "MARKER",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointRef",
    "LocalLocation",
    "Request",
    "Restored",
    "S3Location",
    "S3Settings",
    "SaveSettings",
    "Scan",
    "build_checkpoint_manager",
    "files_for",
    "normalize_content",
    "parse_location",
    "read_checkpoint",
    "save_slot",
]
