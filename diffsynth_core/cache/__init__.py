"""Split training: run the frozen preprocessing units once, store what they give, train from it.

The pieces, each generic (no family is named anywhere):

* :mod:`.plan` -- from the units' declarations alone, which units are cached and which run
  every step, and which pipeline models training then never needs;
* :mod:`.keys` -- the key of one unit call (a hash of the unit and its declared inputs);
* :mod:`.entries` -- a unit call's outputs as safetensors tensors plus a JSON structure;
* :mod:`.fingerprint` -- everything the cached tensors depend on (model files, family,
  settings, data rows and their files), compared field by field;
* :mod:`.folder` -- the cache folder: one shard per data row, written atomically, and the
  index written last;
* :mod:`.encode` -- ``diffsynth cache``: each process encodes its share of the rows, resuming;
* :mod:`.replay` -- training from a cache: cached units answered from it, the dropped models
  loaded only while sample images are made.

``--cache-features`` (:mod:`diffsynth_core.training.cache`) uses the same keys and entries
with the store kept in memory.
"""
