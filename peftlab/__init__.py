"""peftlab: compare parameter-efficient fine-tuning methods on one trainer."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root (the package is installed in editable mode): Hydra finds conf/ and experiments/ from here.
ROOT = Path(__file__).resolve().parents[1]
