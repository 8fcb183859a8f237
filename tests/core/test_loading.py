"""ModelConfig: local files, folders, hub cache (offline), pickle refusal, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffsynth_core.errors import ModelFileError, PickleRefusedError
from diffsynth_core.loading import ModelConfig, load_state_dict


def _write_component(folder: Path, shards: int = 1) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"layers": 2}))
    state = {}
    for i in range(shards):
        part = {f"w{i}": torch.full((2, 2), float(i))}
        save_file(part, folder / f"diffusion_pytorch_model-{i:05d}-of-{shards:05d}.safetensors")
        state.update(part)
    return state


def test_folder_pattern_finds_shards_and_their_config(tmp_path: Path) -> None:
    expected = _write_component(tmp_path / "repo" / "transformer", shards=3)
    config = ModelConfig(path=tmp_path / "repo", origin_file_pattern="transformer/diffusion_pytorch_model*.safetensors")
    names = sorted(f.name for f in config.resolve())
    assert names[0] == "config.json" and len(names) == 4
    assert config.folder() == tmp_path / "repo" / "transformer"
    state = load_state_dict([str(f) for f in config.weight_files()])
    assert set(state) == set(expected) and torch.equal(state["w2"], expected["w2"])


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        ModelConfig(path=tmp_path / "nope.safetensors").resolve()
    (tmp_path / "repo").mkdir()
    with pytest.raises(ModelFileError, match=r"vae/\*\.safetensors"):
        ModelConfig(path=tmp_path / "repo", origin_file_pattern="vae/*.safetensors").resolve()


def test_pickle_refused_unless_allowed(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "model.bin")
    with pytest.raises(PickleRefusedError, match="allow_pickle"):
        load_state_dict(tmp_path / "model.bin")
    state = load_state_dict(tmp_path / "model.bin", allow_pickle=True)
    assert torch.equal(state["w"], torch.ones(2))


def test_pickle_copies_beside_safetensors_are_ignored(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(1)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.ones(1)}, tmp_path / "model.bin")
    files = ModelConfig(path=tmp_path).weight_files()
    assert [f.name for f in files] == ["model.safetensors"]


def test_corrupt_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="bad.safetensors is not a valid safetensors"):
        load_state_dict(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("cut", [1, 100, 2000])
def test_a_truncated_safetensors_file_is_refused_when_resolved(tmp_path: Path, cut: int) -> None:
    """A download cut short: named, before any library reads it (diffusers' OSError for it
    names no cause, and a shard of a real model can be cut anywhere)."""
    whole = tmp_path / "whole.safetensors"
    save_file({"w": torch.ones(600), "b": torch.zeros(4)}, str(whole))
    folder = tmp_path / "repo" / "transformer"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(whole.read_bytes()[:-cut])
    with pytest.raises(ModelFileError, match=r"model.safetensors is not a valid safetensors file \(truncated"):
        ModelConfig(path=tmp_path / "repo", origin_file_pattern="transformer/*.safetensors").resolve()
    assert ModelConfig(path=whole).weight_files() == [whole]  # the whole file passes


def test_a_file_where_the_repository_folder_belongs_names_the_layout(tmp_path: Path) -> None:
    from diffsynth_core.loading import family_loading
    from diffsynth_core.testing import TOY_FAMILY

    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    configs = {"dit": ModelConfig(path=file, origin_file_pattern="transformer/*.safetensors")}
    with pytest.raises(ModelFileError) as caught, family_loading(TOY_FAMILY, configs):
        pass
    assert "model.safetensors is a file, but --model-path wants a folder" in str(caught.value)
    assert "transformer/diffusion_pytorch_model*.safetensors; vae/" in str(caught.value)


@pytest.mark.parametrize(
    ("raised", "translated"),
    [
        (TypeError("ToyDiT.__init__() got an unexpected keyword argument '_class_name'"), True),
        (ValueError("Cannot load because proj_out.bias expected shape [64], but got [4]. More."), True),
        (RuntimeError("Error(s) in loading state_dict for ToyDiT: size mismatch"), True),
        (OSError("Unable to load weights from checkpoint file"), True),
        (TypeError("unsupported operand type(s) for +: 'int' and 'str'"), False),  # a bug
        (RuntimeError("expected scalar type Float but found Half"), False),
        (AttributeError("'NoneType' object has no attribute 'to'"), False),
    ],
)
def test_family_loading_translates_wrong_files_and_lets_bugs_through(
    tmp_path: Path, raised: Exception, translated: bool
) -> None:
    from diffsynth_core.loading import family_loading
    from diffsynth_core.testing import TOY_FAMILY

    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text('{"_class_name": "WanTransformer3DModel"}')
    configs = {"dit": ModelConfig(path=tmp_path, origin_file_pattern="transformer/*.safetensors")}
    with pytest.raises(ModelFileError if translated else type(raised)) as caught:
        with family_loading(TOY_FAMILY, configs):
            raise raised
    if translated:
        message = str(caught.value)
        assert f"could not load model family 'toy' from {tmp_path}: {type(raised).__name__}" in message
        assert "transformer: WanTransformer3DModel (another family's model?)" in message
        assert "More." not in message and caught.value.__cause__ is raised
    else:
        assert caught.value is raised


def _hub_cache(root: Path, repo: str) -> Path:
    """A hub cache as huggingface_hub lays it out, with one snapshot."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / ("a" * 40)
    _write_component(snapshot / "transformer", shards=2)
    (snapshot / "tokenizer").mkdir()
    (snapshot / "tokenizer" / "vocab.json").write_text("{}")
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("a" * 40)
    return snapshot


def test_hub_id_resolves_offline_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    snapshot = _hub_cache(tmp_path, "org/tiny")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    dit = ModelConfig(model_id="org/tiny", origin_file_pattern="transformer/diffusion_pytorch_model*.safetensors")
    assert dit.folder() == snapshot / "transformer"
    assert len(dit.weight_files()) == 2
    tok = ModelConfig(model_id="org/tiny", origin_file_pattern="tokenizer/")
    assert [f.name for f in tok.resolve()] == ["vocab.json"]


def test_hub_miss_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFileError, match="HF_HUB_OFFLINE"):
        ModelConfig(model_id="org/absent", origin_file_pattern="vae/*.safetensors").resolve()
