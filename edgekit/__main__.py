"""`python -m edgekit` (what `torchrun -m edgekit` runs)."""

from edgekit.cli import main

if __name__ == "__main__":
    main()
