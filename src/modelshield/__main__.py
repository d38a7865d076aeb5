"""``python -m modelshield`` (also how ``torchrun -m modelshield train`` starts)."""

import sys

from modelshield.cli import main

sys.exit(main())
