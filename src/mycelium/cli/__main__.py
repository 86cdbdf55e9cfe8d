"""`python -m mycelium.cli`: the same as the `myc` script."""

from mycelium.cli.main import main

main()
