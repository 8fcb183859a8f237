"""Control kinds through this plugin's own hook, and ``diffsynth controlnet prepare``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from diffsynth_core import hookimpl

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "qwen_image_controlnet"


def grey(image: Image.Image, invert: int = 0) -> Image.Image:
    out = ImageOps.grayscale(image).convert("RGB")
    return ImageOps.invert(out) if invert else out


class GreyPlugin:
    """A third-party plugin contributing the ``grey`` kind (optionalhook: loads in any order)."""

    @hookimpl(optionalhook=True)
    def diffsynth_register_control_kinds(self, register: Any) -> None:
        register("grey", grey, description="the image in grey")


@pytest.fixture()
def manager() -> Iterator[Any]:
    """A fresh plugin manager with the grey plugin, installed as the process-wide one."""
    from diffsynth_core.plugins import build_plugin_manager, reset_plugin_manager

    manager = build_plugin_manager()
    info = manager.register_object(GreyPlugin(), "grey-kind", "diffsynth-grey")
    assert info.error is None  # registered before the spec exists: optionalhook lets it in
    reset_plugin_manager(manager)
    yield manager
    reset_plugin_manager(None)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """The bundled images with a plain image,prompt metadata (no control column yet)."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = pd.read_csv(EXAMPLE / "data" / "metadata.csv")[["image", "prompt"]]
    for name in rows["image"]:
        shutil.copy(EXAMPLE / "data" / name, folder / name)
    rows.to_csv(folder / "metadata.csv", index=False)
    return folder


def run(*args: str) -> Any:
    from diffsynth_core.cli.main import build_cli

    return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)


def test_kinds_come_from_plugins_through_the_hook(manager) -> None:  # noqa: ANN001
    from diffsynth_controlnet.kinds import collect_kinds

    kinds = collect_kinds(manager)
    assert kinds["canny"].plugin == "qwen-image-controlnet"
    assert kinds["grey"].plugin == "grey-kind"
    listing = run("controlnet", "kinds").output
    assert "grey" in listing and "grey-kind" in listing and "canny" in listing


def test_duplicate_kind_or_bad_hook_arguments_name_the_plugin(manager) -> None:  # noqa: ANN001
    from diffsynth_controlnet.kinds import collect_kinds
    from diffsynth_core.errors import PluginError

    manager.register_object(GreyPlugin(), "grey-again")
    with pytest.raises(
        PluginError,
        match="'grey' is registered twice: by plugin 'grey-kind' and by plugin 'grey-again'",
    ):
        collect_kinds(manager)


class Misspelt:
    @hookimpl(optionalhook=True)
    def diffsynth_register_control_kinds(self, registrar: Any) -> None: ...


def test_a_misspelt_argument_breaks_only_its_plugin_in_either_order(manager) -> None:  # noqa: ANN001
    import diffsynth_controlnet.plugin as controlnet_plugin
    from diffsynth_controlnet.kinds import collect_kinds
    from diffsynth_core.plugins import PluginManager

    # registered before the spec is known: broken when the ControlNet plugin adds its spec
    # (diffsynth_addhooks), at load time; kinds still work
    early = PluginManager.with_plugins(Misspelt(), controlnet_plugin)
    assert "registrar" in early.plugins["Misspelt"].error
    assert set(collect_kinds(early)) == {"canny"}
    # registered after it: the core's own check marks the plugin broken; kinds still work
    collect_kinds(manager)
    info = manager.register_object(Misspelt(), "misspelt")
    assert info.error and "registrar" in info.error
    assert set(collect_kinds(manager)) == {"canny", "grey"}


def test_prepare_canny_writes_maps_and_metadata(manager, dataset) -> None:  # noqa: ANN001
    from diffsynth_controlnet.canny import canny

    result = run("controlnet", "prepare", "--kind", "canny", "--dataset", str(dataset))
    assert result.exit_code == 0, result.output
    assert "6 control image(s) written" in result.output
    rows = pd.read_csv(dataset / "metadata_canny.csv")
    assert list(rows.columns) == ["image", "prompt", "control_image"]
    for image, control in zip(rows["image"], rows["control_image"], strict=True):
        assert control == f"control/canny/{image}"
        expected = np.asarray(canny(Image.open(dataset / image).convert("RGB")))
        assert np.array_equal(np.asarray(Image.open(dataset / control)), expected)
    again = run("controlnet", "prepare", "--dataset", str(dataset))
    assert "0 control image(s) written, 6 reused" in again.output


def test_prepare_with_a_plugin_kind_params_and_a_bad_row(manager, dataset) -> None:  # noqa: ANN001
    (dataset / "broken.png").write_bytes(b"not a png")
    rows = pd.read_csv(dataset / "metadata.csv")
    rows.loc[len(rows)] = ["broken.png", "a broken file"]
    rows.to_csv(dataset / "metadata.csv", index=False)
    result = run(
        "controlnet", "prepare", "--kind", "grey", "--dataset", str(dataset), "--param", "invert=1",
        "--output-column", "grey_image", "--output-metadata", str(dataset / "grey.jsonl"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "6 control image(s) written" in result.output and "1 row(s) skipped" in result.output
    assert "broken.png" in result.output
    out = pd.read_json(dataset / "grey.jsonl", lines=True)
    assert len(out) == 6 and "grey_image" in out.columns
    first = np.asarray(Image.open(dataset / out["grey_image"][0]))
    assert np.array_equal(
        first, np.asarray(grey(Image.open(dataset / out["image"][0]).convert("RGB"), invert=1))
    )


def test_unknown_kind_lists_the_registered_ones(manager, dataset) -> None:  # noqa: ANN001
    result = CliRunner().invoke(
        __import__("diffsynth_core.cli.main", fromlist=["x"]).build_cli(),
        ["controlnet", "prepare", "--kind", "depth", "--dataset", str(dataset)],
    )
    assert result.exit_code == 1
    assert "no control kind 'depth'" in result.output and "canny, grey" in result.output


def test_bundled_dataset_is_small_and_reproducible(tmp_path: Path) -> None:
    import importlib.util

    files = sorted(p for p in (EXAMPLE / "data").rglob("*") if p.is_file())
    assert sum(p.stat().st_size for p in files) <= 300_000
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.main(tmp_path)
    for path in files:
        assert (tmp_path / path.relative_to(EXAMPLE / "data")).read_bytes() == path.read_bytes(), (
            path.name
        )
