"""`python -m quality finetune ...` and `python -m quality eval ...` (see quality/cli.py)."""
import sys

from quality.cli import main

sys.exit(main())
