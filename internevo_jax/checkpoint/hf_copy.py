"""The Hugging Face copy of each regular checkpoint (InternEvo's `ckpt.enable_internevo2hf_ckpt`).

Once the checkpoint of step N is complete, process 0 reads its `model/` item back and writes
`<save_ckpt_folder>/<N>_hf` with `internevo_jax.hf.export_hf` (config.json, safetensors shards, the
tokenizer when data.tokenizer_path is a sentencepiece model), in the model's dtype as InternEvo's copy
is. Snapshots get none, as in InternEvo. A copy that cannot be written is logged and skipped: the
checkpoint itself is already complete and training goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from typing import Any

from internevo_jax.checkpoint.errors import CheckpointError, StorageUnreachable, first_line
from internevo_jax.checkpoint.layout import hf_copy_name
from internevo_jax.checkpoint.storage import LocalLocation, Location
from internevo_jax.checkpoint.upload import retrying
from internevo_jax.data.tokenizer import sentencepiece_path

logger = logging.getLogger("internevo_jax")

KEY = "ckpt.enable_internevo2hf_ckpt"
# jnp dtype name of model.dtype -> export dtype: the copy keeps the dtype the model computes in
EXPORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
LAST_FILE = "config.json"  # uploaded last to S3: a prefix without it is an unfinished copy


def export_dtype(cfg) -> str:
    """bf16, fp16 or fp32: the dtype of model.dtype (torch.tf32 computes in fp32)."""
    from internevo_jax.config.schema import DTYPES

    return EXPORT_DTYPE[DTYPES[cfg.model.dtype][0]]


def _loads_as_sentencepiece(path: str) -> bool:
    from internevo_jax.hf.tokenizer import special_tokens

    try:
        special_tokens(path)
    except CheckpointError:
        return False
    return True


def sentencepiece_file(path: str | None) -> str | None:
    """data.tokenizer_path as a sentencepiece .model file (a folder's tokenizer.model), or None."""
    if not path:
        return None
    candidate = sentencepiece_path(path)
    if candidate is not None and _loads_as_sentencepiece(candidate):
        return candidate
    logger.warning(
        "%s: data.tokenizer_path=%s is not a sentencepiece model (a .model file, or a folder holding "
        "tokenizer.model); the Hugging Face copies are written without a tokenizer",
        KEY,
        path,
    )
    return None


@dataclasses.dataclass(frozen=True)
class HFCopy:
    """How to write the HF copy of a checkpoint: the run's config, export dtype and tokenizer."""

    cfg: Any = dataclasses.field(repr=False)
    dtype: str
    tokenizer: str | None

    @classmethod
    def from_config(cls, cfg) -> HFCopy | None:
        """None when the key is off; CheckpointError (at start, not after training) when the model
        has no Hugging Face class or its config.json cannot express the model."""
        if not cfg.ckpt.enable_internevo2hf_ckpt:
            return None
        from internevo_jax.hf.export import check_exportable

        dtype = export_dtype(cfg)
        try:
            check_exportable(cfg, dtype)
        except CheckpointError as err:
            raise CheckpointError(
                f"{KEY}=True asks for a Hugging Face copy of every checkpoint, but model_type "
                f"{cfg.model_type!r} cannot be written as one: {err} Set {KEY}=False to train without "
                "the copies (the checkpoints themselves are unaffected)."
            ) from err
        return cls(cfg, dtype, sentencepiece_file(cfg.data.tokenizer_path))

    def write(
        self, step: int, source: str, checkpoint: Location, target: Location, files, scratch: str
    ) -> bool:
        """Write the copy of `checkpoint`, whose items lie in the local folder `source`, to `target`.

        Call on process 0 only. `scratch` is a local folder for an S3 target's copy before upload.
        Returns False, after logging an ERROR naming `target`, when the copy could not be written.
        """
        started = time.perf_counter()
        try:
            self._write(step, source, target, files, scratch)
        except Exception as err:  # whatever went wrong, the complete checkpoint must not be lost
            local = isinstance(checkpoint, LocalLocation)
            logger.error(
                "the Hugging Face copy of step %d could NOT be written to %s: %s The checkpoint %s is "
                "complete and training goes on; convert it later with `python tools/convert2hf.py --src %s --tgt %s`.",
                step,
                target,
                _sentence(err),
                checkpoint,
                checkpoint.path if local else "<the checkpoint folder, downloaded>",
                target.path if local else "DIR",
            )
            return False
        logger.info(
            "Hugging Face copy of step %d written to %s (%s, %.1fs)",
            step,
            target,
            self.dtype,
            time.perf_counter() - started,
        )
        return True

    def _write(self, step: int, source: str, target: Location, files, scratch: str) -> None:
        import jax.numpy as jnp

        from internevo_jax.checkpoint.model_files import read_model
        from internevo_jax.hf.export import export_hf

        jnp_name = {short: name for name, short in EXPORT_DTYPE.items()}[self.dtype]
        params = read_model(source, dtype=jnp.dtype(jnp_name))
        options = dict(dtype=self.dtype, tokenizer=self.tokenizer, overwrite=True, source=source)
        if isinstance(target, LocalLocation):
            export_hf(params, self.cfg, target.path, **options)  # renamed into place when complete
            return
        local = os.path.join(scratch, hf_copy_name(step))
        try:
            export_hf(params, self.cfg, local, **options)
            _upload(files, local, target, step)
        finally:
            shutil.rmtree(local, ignore_errors=True)


def _upload(files, local: str, target, step: int) -> None:
    """Replace `target` (S3) with the folder `local`, config.json last; nothing is left on failure."""
    tries = files.attempts
    if retrying(
        "checking the Hugging Face copy's destination", lambda: files.list_files(target), step, tries
    ):
        retrying(
            "clearing the Hugging Face copy's destination", lambda: files.delete_tree(target), step, tries
        )
    try:
        for select in (lambda rel: rel != LAST_FILE, lambda rel: rel == LAST_FILE):
            retrying(
                "uploading the Hugging Face copy",
                lambda select=select: files.upload_tree(local, target, select=select),
                step,
                tries,
            )
    except BaseException:
        try:
            files.delete_tree(target)
        except (StorageUnreachable, CheckpointError):
            pass  # the prefix has no config.json, so it never passes for a complete copy
        raise


def _sentence(err: BaseException) -> str:
    text = str(err) if isinstance(err, CheckpointError) else first_line(err)
    return text if text.endswith((".", "!", "?")) else f"{text}."
