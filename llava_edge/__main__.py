"""``python -m llava_edge`` runs the command line."""

from llava_edge.cli import main

main()
