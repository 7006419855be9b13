"""The runtime data package stands alone: offline preparation (preprocess) builds on it, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import internevo_jax.data

DATA = Path(internevo_jax.data.__file__).parent


def test_data_never_imports_preprocess():
    for path in sorted(DATA.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("internevo_jax.preprocess") for n in names), path.name
