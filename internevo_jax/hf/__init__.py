"""Hugging Face import and export.

    load_hf_into(state, shardings, path, cfg, content)   ckpt_type="hf" at training start
    load_hf_params(path, cfg, abstract_params)           HF folder -> params tree shaped like abstract_params
    import_hf(path, model_type=None)                     HF folder -> (params, Config) (tools/hf2internevo.py)
    export_hf(params, cfg, target, ...)                  params -> HF folder (tools/convert2hf.py)
    check_exportable(cfg, dtype)                         CheckpointError unless export_hf can write cfg's model

Each model family's HF layout (tensor names, config.json fields, architecture, hints) is one
`HFMapping` in hf/families/; docs/hf.md has the name tables and how to add a family.
"""

from internevo_jax.hf.export import check_exportable, export_hf
from internevo_jax.hf.importer import describe_model, import_hf, load_hf_params
from internevo_jax.hf.loader import load_hf_into
from internevo_jax.hf.registry import mapping_for, register_mapping
from internevo_jax.hf.spec import HFMapping

__all__ = [
    "HFMapping",
    "check_exportable",
    "describe_model",
    "export_hf",
    "import_hf",
    "load_hf_into",
    "load_hf_params",
    "mapping_for",
    "register_mapping",
]
