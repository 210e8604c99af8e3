"""``python -m hpopipe.cli``: the same as the ``hpopipe`` console script."""

from hpopipe.cli.main import main

main()
