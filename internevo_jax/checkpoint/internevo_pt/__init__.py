"""InternEvo's own PyTorch checkpoint folders (model_tp*_pp*.pt, optimizer_*.pt, context.pt, ...):
read onto any mesh (ckpt_type="internevo" on such a folder) and written back (tools/jax2internevo.py).
torch is needed only here, imported on use.
"""

from internevo_jax.checkpoint.internevo_pt.folder import is_internevo_folder
from internevo_jax.checkpoint.internevo_pt.load import read_internevo

__all__ = ["is_internevo_folder", "read_internevo"]
