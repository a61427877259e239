"""The benchmark wing (``llava-edge bench``): the runner and its child worker, the llama-mtmd-cli anchor,
machine facts for reports, the suites and their targets, and the reports. Entered only from the CLI."""
