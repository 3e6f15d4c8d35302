"""`python -m pyllamacy`: the pyllamacy command (see pyllamacy/cli.py)."""
import sys

from pyllamacy.cli import main

if __name__ == "__main__":
    sys.exit(main())
