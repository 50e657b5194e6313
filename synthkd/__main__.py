"""`python -m synthkd`: the `synthkd` command, for an environment whose scripts folder is not on PATH."""

from synthkd.cli import console_main

console_main()
