"""The SAFER Exchange application shell: the `safer` CLI, `safer up` and `safer demo`.

Floor 5: the only package that imports all the others, and holds no logic a
lower package should own.
"""

from ._demo import DemoResult, run_demo
from ._runtime import Runtime
from .cli import main

__all__ = ["DemoResult", "Runtime", "main", "run_demo"]
