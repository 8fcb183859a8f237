"""The training engine: module, losses, LoRA, logger, state and the runner.

Import the pieces from their modules (``diffsynth_core.training.module`` ...); this package
stays empty so that importing one piece does not import all of them.
"""
