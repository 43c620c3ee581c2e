"""A real malicious checkpoint for the tests that loading refuses it: unpickled without weights_only, it runs
`touch MARKER` (so a test can see whether any code ran)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOSTILE = """
import os, sys, torch
class Hostile:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"global_step": 4, "state_dict": {}, "payload": Hostile()}, sys.argv[1])
"""


def write_hostile_checkpoint(path: Path, marker: Path) -> None:
    """Write the malicious pickle at `path` (in its own process: the class must not exist in ours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", HOSTILE, str(path), str(marker)], check=True)
