"""``diffsynth controlnet ...``: the command group this plugin adds (``diffsynth_register_commands``).

* ``prepare``: control images (``--kind canny`` ...) for a plain image dataset;
* ``kinds``: the registered control kinds and their plugins;
* ``export``: a trained ControlNet checkpoint -> a diffusers ControlNet folder.

Light at import (click only): ``diffsynth --help`` imports it; commands import the rest.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group("controlnet")
def controlnet() -> None:
    """ControlNet tools: prepare control images, list control kinds, export checkpoints."""


@controlnet.command("prepare")
@click.option(
    "--kind",
    default="canny",
    show_default=True,
    help="control kind (see `diffsynth controlnet kinds`)",
)
@click.option(
    "--dataset",
    "dataset",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="dataset folder",
)
@click.option(
    "--metadata",
    type=click.Path(dir_okay=False, path_type=Path),
    help="metadata file (default: DATASET/metadata.csv|jsonl|json, else .txt captions)",
)
@click.option(
    "--image-column", default="image", show_default=True, help="column of the source images"
)
@click.option(
    "--output-column",
    default="control_image",
    show_default=True,
    help="column written with the control images",
)
@click.option(
    "--output-metadata",
    type=click.Path(dir_okay=False, path_type=Path),
    help="metadata to write (default: DATASET/metadata_KIND.<same format>)",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="kind parameter, e.g. --param low=50 (repeatable)",
)
@click.option("--overwrite", is_flag=True, help="recompute control images that already exist")
def prepare(
    kind: str,
    dataset: Path,
    metadata: Path | None,
    image_column: str,
    output_column: str,
    output_metadata: Path | None,
    params: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write control images into DATASET/control/KIND/ and a metadata file with their column."""
    from functools import partial

    from diffsynth_core import get_plugin_manager

    from .kinds import get_kind, parse_params
    from .prepare import prepare_dataset

    control_kind = get_kind(get_plugin_manager(), kind)
    fn = partial(control_kind.fn, **parse_params(params))
    report = prepare_dataset(
        dataset, kind, fn, metadata, image_column, output_column, output_metadata, overwrite
    )
    for row, reason in report.skipped:
        click.echo(f"warning: row {row} skipped: {reason}", err=True)
    click.echo(
        f"{report.written} control image(s) written, {report.reused} reused, "
        f"{len(report.skipped)} row(s) skipped; metadata: {report.metadata}"
    )


@controlnet.command("kinds")
def kinds() -> None:
    """List the control kinds that plugins registered."""
    from diffsynth_core import format_table, get_plugin_manager

    from .kinds import collect_kinds

    rows = [(k.name, k.plugin, k.description) for k in collect_kinds(get_plugin_manager()).values()]
    click.echo(format_table(("kind", "plugin", "description"), sorted(rows)))


@controlnet.command("export")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="a full ControlNet checkpoint written by diffsynth train",
)
@click.option(
    "--base-config",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="the base DiT's config.json, its transformer/ folder, or the Qwen-Image folder",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder to write (config.json + diffusion_pytorch_model.safetensors)",
)
def export(checkpoint: Path, base_config: Path, output: Path) -> None:
    """Turn a trained ControlNet checkpoint into a folder diffusers' from_pretrained loads."""
    from .export import export_checkpoint

    folder = export_checkpoint(checkpoint, base_config, output)
    click.echo(
        f"ControlNet written to {folder} (QwenImageControlNetModel.from_pretrained loads it)"
    )
