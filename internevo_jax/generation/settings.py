"""The settings of one generate run: the config's `generation` dict, overridden by command-line flags.

A config without a `generation` dict keeps the command line's own defaults (greedy decoding, 64
new tokens, the tokenizer's BOS and EOS); with one, its values (InternEvo's defaults for the keys it
leaves out) are the defaults. A flag always wins.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from internevo_jax.config import Config, GenerationConfig
from internevo_jax.config.validate import generation_problems
from internevo_jax.generation.sampling import Sampling

DEFAULT_MAX_NEW_TOKENS = 64  # without a generation dict and without --max_new_tokens / --max_length

# Generation keys a flag of the same name overrides.
FLAG_KEYS = (
    "batch_size",
    "bos_id",
    "max_length",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "length_penalty",
)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What one run generates with: the effective generation values, the new-token limit (None:
    each row stops at `generation.max_length` tokens, prompt included), the BOS of text prompts."""

    generation: GenerationConfig
    max_new_tokens: int | None
    batch_size: int
    seed: int
    prompt_bos: int | None = None  # put before each text prompt (None: nothing)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        g = self.generation
        return tuple(g.eos_id) + tuple(g.additional_eos_token_list or ())

    def sampling(self) -> Sampling:
        g = self.generation
        return Sampling(
            do_sample=g.do_sample,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            length_penalty=g.length_penalty,
        )

    def budgets(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """New tokens allowed per prompt (0 for a prompt that already fills max_length)."""
        if self.max_new_tokens is not None:
            return [self.max_new_tokens] * len(prompts)
        return [max(0, self.generation.max_length - len(p)) for p in prompts]


def _base(cfg: Config, tokenizer_bos: int | None, tokenizer_eos: int | None) -> tuple[GenerationConfig, bool]:
    """(the generation values before flags, whether they come from the config's dict)."""
    if cfg.generation is not None:
        return cfg.generation, True
    plain = GenerationConfig(
        eos_id=() if tokenizer_eos is None else (tokenizer_eos,),
        bos_id=0 if tokenizer_bos is None else tokenizer_bos,
        do_sample=False,
        top_k=0,
    )
    return plain, False


def _flag(key: str) -> str:
    return f"--{key}"


def resolve_settings(
    cfg: Config,
    args: argparse.Namespace,
    *,
    tokenizer_bos: int | None = None,
    tokenizer_eos: int | None = None,
) -> RunSettings:
    """The settings of a run from `cfg` and the parsed flags (None: not given). ValueError with one
    line naming the flag (or config key) for a bad value."""
    base, from_config = _base(cfg, tokenizer_bos, tokenizer_eos)
    changes = {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}
    if args.eos_id is not None:
        changes["eos_id"] = tuple(args.eos_id)
        changes["additional_eos_token_list"] = None
    if args.temperature is not None:
        if args.temperature < 0:
            raise ValueError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
        # 0 means greedy (the flag's meaning before do_sample existed); another value asks for
        # sampling. An explicit --do_sample / --greedy still decides.
        changes["do_sample"] = args.temperature > 0
    if args.do_sample is not None:
        changes["do_sample"] = args.do_sample
    gen = dataclasses.replace(base, **changes)
    given = set(changes)
    for key, message in generation_problems(gen, cfg.model.vocab_size):
        where = (
            _flag(key) if key in given else f"generation.{key}" if from_config else f"the tokenizer's {key}"
        )
        raise ValueError(f"{where} {message}")
    new_tokens = args.max_new_tokens
    if new_tokens is None and args.max_length is None and not from_config:
        new_tokens = DEFAULT_MAX_NEW_TOKENS
    if new_tokens is not None and new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be 1 or more, got {new_tokens}")
    batch = gen.batch_size or cfg.data.valid_micro_num * cfg.data.micro_bsz
    bos = gen.bos_id if from_config or "bos_id" in given else tokenizer_bos
    return RunSettings(gen, new_tokens, batch, args.seed, None if args.no_bos else bos)
