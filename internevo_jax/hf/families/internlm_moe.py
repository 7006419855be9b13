"""INTERNLM_MoE (InternEvo's InternLM1-MoE) has no Hugging Face layout: `NO_LAYOUT` says why, and
hf/registry.py words its export / import error with it and the MoE layouts there are."""

NO_LAYOUT = {
    "INTERNLM_MoE": (
        "InternEvo's InternLM-MoE has no transformers class to write its weights for or read them from "
        "(and its shared experts, mixed in by softmax(feed_forward/coefficient), have no counterpart in "
        "the MoE classes transformers ships)"
    ),
}
