"""`python -m pyllamacy`: the pyllamacy command (see pyllamacy/cli.py)."""
import sys

if __name__ == "__main__":
    try:
        from pyllamacy.cli import main
    except KeyboardInterrupt:       # Ctrl-C while starting up
        sys.exit(130)
    sys.exit(main())
