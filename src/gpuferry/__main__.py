"""`python -m gpuferry` runs the command line."""

from gpuferry.cli import main

main()
