"""`python -m service.witness serve ...`: the witness without the CLI (the dev stack runs this)."""

import sys

from service.witness.serve import main

if __name__ == "__main__":
    sys.exit(main())
