"""Qwen-Image tiny preset on the CPU: our training path against a bare hand-written loop.

    python bench/qwen_image_cpu.py [--sizes 64,256,512] [--rounds 3] [--threads 1]

Two paths do the same training work on the same tiny model (LoRA rank 32 on the family's 12
targets, gradient checkpointing, AdamW, fp32, batch 1, the bundled dataset resized to SIZE):

* ``diffsynth``: the ``diffsynth train --model qwen-image --model-path TINY`` command; its
  steps/s is the median of ``logs/metrics.csv``'s per-step rate (a whole step cycle: data
  loading, units, loss, backward, clipping, optimizer, logging);
* ``bare``: the same work written by hand on diffusers / transformers / peft (load and resize
  the image, VAE encode, template + Qwen2.5-VL, pack, DiT with its checkpointing, MSE,
  backward, AdamW); its steps/s is the median step time's inverse.

Throughput is measured in one process that alternates the two paths ``--rounds`` times, so a
busy machine slows both alike; overhead = bare steps/s over ours - 1 (median over rounds).
Peak RSS and the time from process start to the end of step 1 come from one fresh process per
path (the CLI as a user runs it). Results go to ``bench/results/qwen_image_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "examples" / "qwen_image" / "data"
STEPS = {64: 30, 256: 20, 512: 10}
TARGETS = (
    "to_q,to_k,to_v,add_q_proj,add_k_proj,add_v_proj,to_out.0,to_add_out,"
    "img_mlp.net.2,img_mod.1,txt_mlp.net.2,txt_mod.1"
)
TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
    "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
    "<|im_end|>\n<|im_start|>assistant\n"
)


# -- the two paths -----------------------------------------------------------------------------


def cli_args(tiny: Path, size: int, steps: int, output: Path) -> list[str]:
    return [
        "train", "--model", "qwen-image", "--model-path", str(tiny), "--dataset", str(DATASET),
        "--height", str(size), "--width", str(size), "--max-steps", str(steps), "--output", str(output),
    ]  # fmt: skip


def diffsynth_rate(tiny: Path, size: int, steps: int, output: Path) -> float:
    """``diffsynth train`` in this process; median steps/s of its metrics log (step 1 excluded)."""
    from diffsynth_core.cli.main import build_cli

    build_cli().main(
        args=cli_args(tiny, size, steps, output), prog_name="diffsynth", standalone_mode=False
    )
    rows = (output / "logs" / "metrics.csv").read_text().splitlines()[2:]
    return statistics.median(float(r.split(",")[-1]) for r in rows)


class BareLoop:
    """The same training work with no diffsynth code."""

    def __init__(self, tiny: Path) -> None:
        import torch
        from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

        self.tok = Qwen2Tokenizer.from_pretrained(tiny / "tokenizer")
        self.te = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny / "text_encoder").eval()
        self.vae = AutoencoderKLQwenImage.from_pretrained(tiny / "vae").eval()
        dit = QwenImageTransformer2DModel.from_pretrained(tiny / "transformer").requires_grad_(
            False
        )
        self.te.requires_grad_(False), self.vae.requires_grad_(False)
        config = LoraConfig(r=32, lora_alpha=32, target_modules=TARGETS.split(","))
        self.dit = inject_adapter_in_model(config, dit)
        self.dit.enable_gradient_checkpointing()
        params = [p.requires_grad_(True) for n, p in self.dit.named_parameters() if "lora_" in n]
        self.opt = torch.optim.AdamW(params, lr=1e-4)
        self.mean = torch.tensor(self.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        self.std = torch.tensor(self.vae.config.latents_std).view(1, 16, 1, 1, 1)
        lines = (DATASET / "metadata.csv").read_text().splitlines()[1:]
        self.rows = [(n, p.strip('"')) for n, p in (line.split(",", 1) for line in lines)]

    def step(self, i: int, size: int) -> None:
        import numpy as np
        import torch
        from PIL import Image

        name, prompt = self.rows[i % len(self.rows)]
        image = Image.open(DATASET / name).convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            lat = ((self.vae.encode(x[:, :, None]).latent_dist.mode() - self.mean) / self.std)[
                :, :, 0
            ]
            ids = self.tok([TEMPLATE.format(prompt)], return_tensors="pt")
            emb = self.te(**ids, output_hidden_states=True).hidden_states[-1][:, 34:]
        noise, sigma = torch.randn_like(lat), torch.rand(1)
        h, w = lat.shape[-2:]
        xt = ((1 - sigma) * lat + sigma * noise).view(1, 16, h // 2, 2, w // 2, 2)
        packed = xt.permute(0, 2, 4, 1, 3, 5).reshape(1, h * w // 4, 64)
        shapes = [[(1, h // 2, w // 2)]]
        out = self.dit(
            hidden_states=packed,
            timestep=sigma,
            encoder_hidden_states=emb,
            img_shapes=shapes,
            return_dict=False,
        )[0]
        pred = out.view(1, h // 2, w // 2, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, h, w)
        torch.nn.functional.mse_loss(pred, noise - lat).backward()
        self.opt.step()
        self.opt.zero_grad()

    def run(self, size: int, steps: int) -> tuple[float, float]:
        """(median steps/s over steps 2..N, wall-clock end of step 1)."""
        times, first_end = [], 0.0
        for i in range(steps):
            t0 = time.perf_counter()
            self.step(i, size)
            times.append(time.perf_counter() - t0)
            first_end = first_end or time.time()
        return 1 / statistics.median(times[1:]), first_end


# -- workers (child processes of this script) ----------------------------------------------------


def interleave_worker(tiny: Path, size: int, steps: int, rounds: int, work: Path) -> None:
    """Alternate the two paths in one process; print one JSON line of per-round rates."""
    bare, rates = BareLoop(tiny), {"bare": [], "diffsynth": []}
    for r in range(rounds):
        rates["bare"].append(bare.run(size, steps)[0])
        rates["diffsynth"].append(diffsynth_rate(tiny, size, steps, work / f"round-{size}-{r}"))
    print(json.dumps(rates))


def bare_worker(tiny: Path, size: int, steps: int) -> None:
    print(json.dumps({"first_end": BareLoop(tiny).run(size, steps)[1]}))


def run_child(
    args: list[str], env: dict[str, str], log: Path, watch: Path | None = None
) -> dict[str, float]:
    """Run a child; its start, its own peak RSS (MB, from wait4) and, with ``watch``, seconds
    until that metrics file had its step-1 row."""
    start, first = time.time(), 0.0
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if (
                not first
                and watch is not None
                and watch.is_file()
                and len(watch.read_text().splitlines()) >= 2
            ):
                first = time.time() - start
            time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed:\n{log.read_text()[-3000:]}")
    return {"start": start, "rss_mb": usage.ru_maxrss / 1024, "first_s": first}


def measure(
    tiny: Path, size: int, rounds: int, env: dict[str, str], work: Path
) -> list[dict[str, float]]:
    """One table row per path for one image size."""
    steps, me = STEPS.get(size, 15), [sys.executable, __file__]
    log = work / f"interleave-{size}.log"
    run_child(
        [*me, "--interleave", str(tiny), str(size), str(steps), str(rounds), str(work)], env, log
    )
    rates = json.loads(log.read_text().strip().splitlines()[-1])
    out = work / f"cli-{size}"
    cli = run_child(
        [str(Path(sys.executable).parent / "diffsynth"), *cli_args(tiny, size, 3, out)],
        env,
        work / "cli.log",
        out / "logs" / "metrics.csv",
    )
    bare = run_child([*me, "--bare", str(tiny), str(size), "3"], env, work / f"bare-{size}.log")
    bare["first_s"] = (
        json.loads((work / f"bare-{size}.log").read_text().strip().splitlines()[-1])["first_end"]
        - bare["start"]
    )
    ratios = [b / d - 1 for b, d in zip(rates["bare"], rates["diffsynth"], strict=True)]
    return [
        {"size": size, "path": "bare", "steps_per_s": statistics.median(rates["bare"]), **bare},
        {"size": size, "path": "diffsynth", "steps_per_s": statistics.median(rates["diffsynth"]), "overhead": statistics.median(ratios), "ratios": ratios, **cli},
    ]  # fmt: skip


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| size | path | steps/s | overhead vs bare (per round) | peak RSS (MB) | start to first step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rounds = ", ".join(f"{x * 100:+.0f}" for x in r.get("ratios", []))
        overhead = f"{r['overhead'] * 100:+.1f}% ({rounds})" if "overhead" in r else ""
        lines.append(
            f"| {r['size']} | {r['path']} | {r['steps_per_s']:.2f} | {overhead} | {r['rss_mb']:.0f} | {r['first_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256,512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", default="1", help="torch threads in every run (OMP_NUM_THREADS)"
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": args.threads, "TQDM_DISABLE": "1"}
    load, rows = os.getloadavg()[0], []
    with tempfile.TemporaryDirectory() as tmp:
        from diffsynth_qwen_image.tiny import build_tiny

        tiny = build_tiny(Path(tmp) / "tiny")
        for size in (int(s) for s in args.sizes.split(",")):
            rows += measure(tiny, size, args.rounds, env, Path(tmp))
            print(table(rows[-2:]), flush=True)
    import torch

    report = (
        "# Qwen-Image tiny preset, CPU training: diffsynth vs a bare loop\n\n"
        f"`python bench/qwen_image_cpu.py --sizes {args.sizes} --rounds {args.rounds} --threads {args.threads}`"
        f", {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {os.cpu_count()} CPU cores "
        f"({platform.machine()}), load average {load:.1f} at start (other jobs shared the cores).\n\n"
        + table(rows)
        + "\nLoRA rank 32 on the family's 12 targets, gradient checkpointing, AdamW, fp32, batch 1. "
        "steps/s: median over rounds of the median step rate, both paths alternating in one process; "
        "overhead: median over rounds of (bare / diffsynth - 1) within each round, the rounds' values "
        "in brackets (the machine's load drifts between rounds, so a round compares like with like). "
        "Peak RSS and start to first step: a fresh process per path; the `diffsynth` one is the "
        "CLI with its imports, dataset check and start-up summary.\n"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "qwen_image_cpu.md").write_text(report)
    print(report)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "--interleave":
        interleave_worker(
            Path(sys.argv[2]),
            int(sys.argv[3]),
            int(sys.argv[4]),
            int(sys.argv[5]),
            Path(sys.argv[6]),
        )
    elif mode == "--bare":
        bare_worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
