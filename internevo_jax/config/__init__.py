"""Training configs: InternEvo-style .py files -> a typed, validated, immutable Config.

    from internevo_jax.config import load_config, parallel_sizes
    cfg = load_config("configs/7b_sft.py", overrides=["data.micro_bsz=4"])
    sizes = parallel_sizes(cfg, world_size=8)

See docs/config.md for the file format, the extension keys and the override syntax.
"""

from .errors import ConfigError
from .loader import config_from_dict, load_config
from .parallel_sizes import ParallelSizes, parallel_sizes
from .schema import (
    DTYPES,
    PIPELINE_MODES,
    TENSOR_MODES,
    AdamConfig,
    AlertConfig,
    Beta2SchedulerConfig,
    CkptConfig,
    Config,
    DataConfig,
    Fp16ScalerConfig,
    GenerationConfig,
    GradScalerConfig,
    HybridZeroOptimizerConfig,
    LoadCkptInfo,
    LossConfig,
    LrSchedulerConfig,
    ModelConfig,
    MonitorConfig,
    ParallelConfig,
    PipelineConfig,
    TensorboardConfig,
    TensorConfig,
    WeightConfig,
    ZeroConfig,
)

__all__ = [
    "DTYPES",
    "PIPELINE_MODES",
    "TENSOR_MODES",
    "AdamConfig",
    "AlertConfig",
    "Beta2SchedulerConfig",
    "CkptConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "Fp16ScalerConfig",
    "GenerationConfig",
    "GradScalerConfig",
    "HybridZeroOptimizerConfig",
    "LoadCkptInfo",
    "LossConfig",
    "LrSchedulerConfig",
    "ModelConfig",
    "MonitorConfig",
    "ParallelConfig",
    "ParallelSizes",
    "PipelineConfig",
    "TensorConfig",
    "TensorboardConfig",
    "WeightConfig",
    "ZeroConfig",
    "config_from_dict",
    "load_config",
    "parallel_sizes",
]
