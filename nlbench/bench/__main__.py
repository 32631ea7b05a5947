"""``python -m nlbench.bench``: the training benchmark (see :mod:`nlbench.bench`)."""
import sys

from .cli import main

sys.exit(main())
