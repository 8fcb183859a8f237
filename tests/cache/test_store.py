"""Entries as safetensors + JSON, shards written atomically, the index written last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffsynth_core.cache.entries import pack, unpack
from diffsynth_core.cache.folder import CacheFolder, ShardStore
from diffsynth_core.errors import ConfigError, PluginError


def test_an_entry_round_trips_with_lists_none_and_numbers() -> None:
    entry = (
        {"height": 32, "latents": torch.arange(6.0).reshape(2, 3), "edit": [torch.ones(2), torch.zeros(1, dtype=torch.bfloat16)]},
        {"prompt_emb": torch.randn(1, 4, 8), "prompt_emb_mask": None},
        {},
    )  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    structure = json.loads(json.dumps(pack(entry, "k", tensors, "Unit")))  # JSON-safe
    back = unpack(structure, tensors.__getitem__, "cpu")
    assert back[0]["height"] == 32 and back[1]["prompt_emb_mask"] is None and back[2] == {}
    assert torch.equal(back[0]["latents"], entry[0]["latents"])
    assert isinstance(back[0]["edit"], list) and back[0]["edit"][1].dtype == torch.bfloat16
    assert torch.equal(back[1]["prompt_emb"], entry[1]["prompt_emb"])


def test_an_output_a_cache_cannot_store_names_the_unit() -> None:
    with pytest.raises(PluginError, match="unit Embed returned 'thing' of type object"):
        pack(({"thing": object()}, {}, {}), "k", {}, "Embed")


def test_a_shard_is_complete_or_absent_and_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import torch as st

    folder = CacheFolder(tmp_path / "c")
    folder.prepare()
    emb = torch.randn(1, 3)
    folder.write(0, "h0", "s", [("key0", "Prompt", ({}, {"emb": emb}, {}))])
    assert (
        folder.done(0, "h0", "s")
        and not folder.done(0, "h1", "s")
        and not folder.done(0, "h0", "t")
    )

    def killed(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half a shard")  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        folder.write(1, "h1", "s", [("key1", "Prompt", ({}, {"emb": emb}, {}))])
    assert folder.header(1) is None and not folder.shard(1).exists()  # nothing half-written
    folder.prepare()
    assert list(folder.rows.iterdir()) == [folder.shard(0)]  # the temporary file is gone
    entry = ShardStore(folder, range(2)).get("key0", "cpu")
    assert entry is not None and torch.equal(entry[1]["emb"], emb)


def test_a_cache_without_its_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        CacheFolder(tmp_path / "none").read_index()
    folder = CacheFolder(tmp_path / "c")
    folder.prepare()
    with pytest.raises(ConfigError, match="did not finish.*resumes"):
        folder.read_index()
