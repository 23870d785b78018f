"""`python -m genforge` (and `torchrun -m genforge train ...`) run the command line."""

from genforge.cli import main

if __name__ == "__main__":
    main()
