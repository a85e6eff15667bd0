"""`python -m core ...`: the command line, in core/cli/."""

from core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
