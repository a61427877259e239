"""``python -m llava_edge`` runs the command line."""

from .cli import main

main()
