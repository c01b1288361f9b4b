"""`python -m asm_cli`: the same as the `asm` console script."""

from asm_cli.app import main

main()
