"""``python -m stemflow`` runs the same CLI as the ``stemflow`` script."""

from stemflow.cli import main

if __name__ == "__main__":
    main()
