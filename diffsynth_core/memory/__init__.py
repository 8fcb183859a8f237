"""The memory estimate of ``diffsynth train --estimate-memory``: a training step of the real
model in a FakeTensorMode under torch's MemTracker (docs/memory.md, "The memory estimate").

``spec`` (what a family declares: ``RealSize``, ``Shape``) imports nothing heavy; ``fake``
(the traced step), ``estimate`` (the categories at real size), ``search`` (the cheapest
settings that fit a budget) and ``report`` (the CLI's text) import torch.
"""
