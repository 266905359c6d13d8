"""`python -m client ...` runs the mmsearch CLI."""
import sys

from client.cli import main

sys.exit(main())
