"""The curated mutants of ``tox -e mutation``: realistic bugs where a silent error loses work.

Each :class:`Mutant` replaces one exact snippet of one file (it must occur exactly once, so a
refactor that moves the code makes the mutant *stale* and fails loudly instead of mutating the
wrong line) and names the narrowest pytest selection that must fail with the bug in place.
``run.py`` applies them one at a time in a scratch copy of the repository; a mutant whose tests
still pass is a missing test. ``tests/mutation/test_mutation_table.py`` checks this table in
the normal test run.

``expected_survivor`` marks a mutant known to survive while the test that kills it is being
written elsewhere; it is still run and reported (and its note should go once it is killed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str  # relative to the repository root
    original: str  # occurs exactly once in ``file``
    mutated: str
    bug: str  # the realistic bug, in one line
    tests: tuple[str, ...]  # pytest arguments: test files / node ids, optionally "-k", "expr"
    expected_survivor: str = ""


CORE = "diffsynth_core/"
QWEN = "plugins/diffsynth-qwen-image/"
VACE = "plugins/diffsynth-vace/"
RUNNER_TESTS = "tests/training/test_runner.py"
STATE_TESTS = "tests/training/test_state.py"
LOGGER_TESTS = "tests/training/test_logger.py"
KILLS = "tests/training/test_mutation_kills.py"
STEP_CHECKS = "tests/training/test_step_checks.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- resume: a resumed run must end where an unbroken run ends ------------------------------
    Mutant(
        "resume-replays-last-batch",
        CORE + "training/batches.py",
        "batch_sampler=self.epoch(epoch)[start_batch:],",
        "batch_sampler=self.epoch(epoch)[max(0, start_batch - 1) :],",
        "a resumed epoch starts one batch early (off by one in the data position)",
        (RUNNER_TESTS, "-k", "sigterm"),
    ),
    Mutant(
        "resume-position-counts-batch-in-progress",
        CORE + "training/runner.py",
        "position = position.after_step(batch=index + 1)",
        "position = position.after_step(batch=index)",
        "the saved data position leaves out the last batch trained (a resume replays it)",
        (RUNNER_TESTS, "-k", "sigterm"),
    ),
    Mutant(
        "rng-restore-skips-torch",
        CORE + "training/state.py",
        '    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))\n'
        '    torch.set_rng_state(state["torch"])\n',
        '    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))\n',
        "resume restores python and numpy RNG but not torch's (other noise after a resume)",
        (STATE_TESTS, "-k", "rng_round_trip"),
    ),
    Mutant(
        "resume-drops-optimizer-state",
        CORE + "training/state.py",
        "            optimizer.load_state_dict(\n"
        '                torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)\n'
        "            )\n",
        '            torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)\n',
        "resume reads optimizer.pt but never loads it (Adam moments start from zero)",
        (RUNNER_TESTS, "-k", "sigterm"),
    ),
    Mutant(
        "resume-latest-picks-oldest",
        CORE + "training/state.py",
        "return states[-1] if states else None",
        "return states[0] if states else None",
        "--resume latest continues from the oldest kept state (redoes steps, loses the newest)",
        (KILLS, "-k", "newest_complete_state"),
    ),
    Mutant(
        "state-list-accepts-incomplete",
        CORE + "training/state.py",
        "if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).exists()",
        "if (m := _STEP_DIR.match(p.name))",
        "a state folder without trainer_state.json counts as the latest (resume then crashes)",
        (KILLS, "-k", "newest_complete_state"),
    ),
    Mutant(
        "epoch-keeps-partial-accumulation",
        CORE + "training/batches.py",
        "return per_process - per_process % self.accumulation",
        "return per_process",
        "an epoch's leftover micro-batches are not cut: they accumulate into the next epoch's step",
        (KILLS, "-k", "whole_optimizer_step"),
    ),
    Mutant(
        "state-prune-deletes-newest",
        CORE + "training/state.py",
        "for old in self.all()[: -self.keep]:",
        "for old in self.all()[self.keep :]:",
        "pruning old training states deletes the newest ones instead of the oldest",
        (RUNNER_TESTS, "-k", "nan_loss"),
    ),
    # -- atomic writes ---------------------------------------------------------------------------
    Mutant(
        "atomic-write-in-place",
        CORE + "training/atomic.py",
        "        write(tmp)\n        fsync_path(tmp)\n        os.replace(tmp, path)\n",
        "        write(path)\n        fsync_path(path)\n",
        "checkpoints written in place: a kill mid-save truncates the newest file",
        (LOGGER_TESTS, "-k", "crash_mid_write"),
    ),
    Mutant(
        "atomic-rename-before-fsync",
        CORE + "training/atomic.py",
        "        write(tmp)\n        fsync_path(tmp)\n        os.replace(tmp, path)\n",
        "        write(tmp)\n        os.replace(tmp, path)\n",
        "renamed before its data is fsync'd: a power cut can leave an empty newest file",
        (KILLS, "-k", "atomic_write"),
    ),
    Mutant(
        "atomic-leaves-temporary",
        CORE + "training/atomic.py",
        "        tmp.unlink(missing_ok=True)\n        raise\n",
        "        raise\n",
        "a failed write leaves its half-written temporary file in the output folder",
        (LOGGER_TESTS, "-k", "crash_mid_write"),
    ),
    Mutant(
        "clean-temporaries-wrong-pattern",
        CORE + "training/atomic.py",
        "folder.glob(TMP_PREFIX + \"*\")",
        "folder.glob(\"tmp-*\")",
        "what a killed save left behind is never cleaned (pattern misses the leading dot)",
        (KILLS, "-k", "killed_save"),
    ),
    # -- NaN guards ------------------------------------------------------------------------------
    Mutant(
        "nan-guard-checks-inf-only",
        CORE + "training/guards.py",
        "if value is None or math.isfinite(float(value)):",
        "if value is None or not math.isinf(float(value)):",
        "the finiteness guard catches inf but lets a NaN loss train on",
        (RUNNER_TESTS, "-k", "nan_loss"),
    ),
    Mutant(
        "nan-guard-skips-grad-norm",
        CORE + "training/guards.py",
        'if what == "gradient norm" and self.accelerator.scaler is not None:',
        'if what == "gradient norm":',
        "only the loss is checked: a NaN gradient with a finite loss ruins the weights",
        (KILLS, "-k", "nan_gradient"),
    ),
    Mutant(
        "nan-check-on-save-misses-inf",
        CORE + "training/logger.py",
        "if v.is_floating_point() and not torch.isfinite(v).all()]",
        "if v.is_floating_point() and torch.isnan(v).any()]",
        "checkpoints with inf weights are written (the save check looks for NaN only)",
        (KILLS, "-k", "inf_weights"),
    ),
    # -- bad-sample policy -----------------------------------------------------------------------
    Mutant(
        "bad-sample-error-policy-skips",
        CORE + "data/dataset.py",
        'if self.on_bad_sample == "error":',
        'if self.on_bad_sample == "stop":',
        "--on-bad-sample error skips bad samples instead of stopping",
        ("tests/data/test_dataset.py", "-k", "error_policy"),
    ),
    Mutant(
        "all-bad-batch-trains-at-full-weight",
        CORE + "training/guards.py",
        "        return self.last_good, 0.0\n",
        "        return self.last_good, 1.0\n",
        "a batch of only bad samples trains the last good batch again at full weight",
        (KILLS, "-k", "only_bad_samples"),
    ),
    Mutant(
        "collate-drops-bad-records",
        CORE + "data/dataset.py",
        'bad = list(getattr(samples, "bad_records", ()))',
        "bad: list[BadRecord] = []",
        "bad samples skipped in DataLoader workers are neither counted nor logged",
        ("tests/data/test_dataset.py", "-k", "workers_skip"),
    ),
    Mutant(
        "runner-ignores-bad-sample-policy",
        CORE + "training/runner.py",
        "dataset = _copy_with(dataset, on_bad_sample=opts.on_bad_sample)",
        "dataset = _copy_with(dataset, bad_sample_policy=opts.on_bad_sample)",
        "the runner never hands --on-bad-sample to the dataset (error silently means skip)",
        (RUNNER_TESTS, "-k", "error_policy"),
    ),
    Mutant(
        "bad-sample-log-truncated-on-resume",
        CORE + "data/bad_samples.py",
        'with self.path.open("a", encoding="utf-8") as handle:',
        'with self.path.open("w", encoding="utf-8") as handle:',
        "bad_samples.jsonl rewritten on every add: a resumed run (or the next skip) erases the log",
        ("tests/data/test_dataset.py", RUNNER_TESTS, "-k", "bad"),
    ),
    # -- data pairing and buckets ----------------------------------------------------------------
    Mutant(
        "folder-captions-by-sorted-position",
        CORE + "data/folder.py",
        "        caption = file.with_suffix(caption_extension)\n",
        "        ordered = sorted(captions)\n"
        "        caption = ordered[min(len(scan.rows), len(ordered) - 1)] if ordered else file\n",
        "folder captions paired by sorted position, not by stem (an extra .txt shifts them all)",
        ("tests/data/test_folder_pairing.py",),
    ),
    Mutant(
        "repeat-maps-index-to-other-row",
        CORE + "data/dataset.py",
        "return index % len(self.rows)",
        "return index // self.repeat",
        "with --repeat, index i loads row i // repeat but buckets assume i % rows (sizes mix up)",
        ("tests/data/test_buckets.py", "tests/data/test_dataset.py", "-k", "repeat"),
    ),
    Mutant(
        "bucket-by-pixel-count",
        CORE + "data/buckets.py",
        'key: Hashable = tuple(size) if size is not None else ("unreadable", index)',
        'key: Hashable = size[0] * size[1] if size is not None else ("unreadable", index)',
        "buckets keyed by pixel count: 64x32 and 32x64 images land in one batch",
        ("tests/data/test_buckets.py", "-k", "one_size"),
    ),
    Mutant(
        "bucket-shuffle-global-rng",
        CORE + "data/buckets.py",
        "                rng.shuffle(indices)\n",
        "                random.shuffle(indices)\n",
        "bucket order drawn from the global RNG: not reproducible, a resume replays other data",
        ("tests/data/test_buckets.py", "-k", "deterministic"),
    ),
    Mutant(
        "bucket-count-extra-batch",
        CORE + "data/buckets.py",
        "0 if self.drop_last or len(b) % self.batch_size == 0 else 1",
        "0 if self.drop_last else 1",
        "a bucket that divides evenly is counted one batch too many (epochs never end)",
        ("tests/data/test_buckets.py", "-k", "repeat"),
    ),
    Mutant(
        "bucket-resume-ignores-start-batch",
        CORE + "data/buckets.py",
        "yield from self.batches()[self.start_batch :]",
        "yield from self.batches()",
        "a resumed epoch replays the batches it already trained on",
        ("tests/data/test_buckets.py", "-k", "resume"),
    ),
    Mutant(
        "resize-rounds-to-nearest",
        CORE + "data/images.py",
        "out_w = int(w * scale + 1e-6) // width_division_factor * width_division_factor",
        "out_w = round(w * scale / width_division_factor) * width_division_factor",
        "bucket width rounded to the nearest multiple of 16 instead of down (upscales images)",
        ("tests/data/test_operators.py", "-k", "target_size"),
    ),
    # -- schedulers ------------------------------------------------------------------------------
    Mutant(
        "static-shift-inverted",
        CORE + "scheduler.py",
        "sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)",
        "sigmas = sigmas / (shift - (shift - 1) * sigmas)",
        "the static shift applied as 1/shift (sigmas pulled toward the clean end)",
        ("tests/core/test_scheduler.py", "-k", "static"),
    ),
    Mutant(
        "dynamic-shift-sign",
        CORE + "scheduler.py",
        "sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))",
        "sigmas = math.exp(-mu) / (math.exp(-mu) + (1 / sigmas - 1))",
        "the resolution-dependent shift with the sign of mu flipped",
        ("tests/core/test_scheduler.py", "-k", "dynamic"),
    ),
    Mutant(
        "inference-sigmas-training-spacing",
        CORE + "scheduler.py",
        "base = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64) * denoising_strength",
        "base = torch.linspace(1.0, 0.0, n, dtype=torch.float64) * denoising_strength",
        "inference sigmas run down to 0 before the final 0 (off by one: a wasted last step)",
        ("tests/core/test_scheduler.py", "-k", "dynamic or static"),
    ),
    Mutant(
        "euler-step-sigma-index",
        CORE + "scheduler.py",
        "sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]",
        "sigma, sigma_next = self.sigmas[max(i - 1, 0)], self.sigmas[i]",
        "the Euler step uses the sigmas one index early (the first step does nothing)",
        ("tests/core/test_scheduler.py", "-k", "euler"),
    ),
    Mutant(
        "add-noise-swapped",
        CORE + "scheduler.py",
        "return ((1 - sigma) * original_samples.float() + sigma * noise.float())",
        "return (sigma * original_samples.float() + (1 - sigma) * noise.float())",
        "training noise mixed the wrong way round (sigma weights the clean latents)",
        ("tests/core/test_scheduler.py", "-k", "add_noise"),
    ),
    # -- LoRA import / export and scaling --------------------------------------------------------
    Mutant(
        "lora-export-fold-inverted",
        CORE + "lora/variants.py",
        "out[_key(module, folded)] = parts[folded] * scale",
        "out[_key(module, folded)] = parts[folded] / scale",
        "checkpoint export folds rank/alpha into lora_B instead of alpha/rank",
        (QWEN + "tests/test_qwen_image_lora_strength.py", "-k", "every_format"),
    ),
    Mutant(
        "lora-scale-ignores-alpha",
        CORE + "lora/inject.py",
        "            return float(scaling[\"default\"])\n",
        "            return 1.0\n",
        "the export takes alpha = rank whatever --lora-alpha was (a 2x too weak file at alpha 2r)",
        ("tests/core/test_lora_and_module.py", "-k", "export_folds or bare_folded"),
    ),
    Mutant(
        "lora-import-alpha-inverted",
        CORE + "lora/files.py",
        'b = b * (module_alpha / parts["A"].shape[0])',
        'b = b * (parts["A"].shape[0] / module_alpha)',
        "a ComfyUI/kohya LoRA's .alpha applied as rank/alpha when reading it",
        ("tests/core/test_lora_and_module.py", "-k", "key_form"),
    ),
    Mutant(
        "lora-continue-scales-twice",
        CORE + "lora/inject.py",
        "            value = value / scale\n",
        "            value = value * scale\n",
        "--lora-checkpoint multiplies the folded lora_B by alpha/rank again",
        ("tests/core/test_lora_and_module.py", "-k", "continue_training"),
    ),
    Mutant(
        "export-keeps-peft-default",
        CORE + "lora/files.py",
        '    return _PARAMETER.sub(r".\\1", _ADAPTER.sub(r".\\1.", key))\n',
        "    return key\n",
        "exported LoRA keys keep peft's .default. (diffusers and ComfyUI ignore them)",
        ("tests/core/test_lora_and_module.py", "-k", "bare_folded"),
    ),
    Mutant(
        "diffusers-format-without-prefix",
        CORE + "lora/formats.py",
        '    return {dot + key: value for key, value in state_dict.items()}',
        "    return dict(state_dict)",
        "diffusers-format LoRA without transformer. prefix: loads with no error and no effect",
        ("tests/platform/test_builtin_plugins.py", "-k", "prefix"),
    ),
    # -- plugin isolation ------------------------------------------------------------------------
    Mutant(
        "broken-plugin-keeps-families",
        CORE + "plugins.py",
        "        self.families.remove_plugin(name)\n",
        "",
        "a broken plugin's half-registered families stay usable",
        ("tests/platform/test_plugin_manager.py", "-k", "contributes_nothing"),
    ),
    Mutant(
        "broken-plugin-keeps-losses",
        CORE + "plugins.py",
        "for loss in [entry.name for entry in self.losses.values() if entry.plugin == name]:",
        "for loss in [entry.name for entry in self.losses.values() if entry.name == name]:",
        "a broken plugin's losses are matched by loss name, so they stay registered",
        (KILLS, "-k", "loss_behind"),
    ),
    Mutant(
        "broken-commands-stay-in-cli",
        CORE + "plugins.py",
        "                cli.commands.clear()\n                cli.commands.update(before)\n",
        "                pass\n",
        "a plugin whose command registration fails leaves its half-added commands in the CLI",
        ("tests/platform/test_cli.py", "-k", "commands_fail"),
    ),
    # -- the NaN guard on the device (step_checks.py) --------------------------------------------
    Mutant(
        "nan-flag-not-sticky",
        CORE + "training/step_checks.py",
        "torch.maximum(self.flag, bad.float(), out=self.flag)",
        "self.flag.copy_(bad.float())",
        "only the bad step's update is skipped: the good steps after it train on until the host reads",
        (STEP_CHECKS, "-k", "between_host_reads"),
    ),
    Mutant(
        "nan-state-with-later-rng",
        CORE + "training/step_checks.py",
        "self.keeper.check_finite(value, what, self.good.position, rng=self.good.rng)",
        "self.keeper.check_finite(value, what, self.good.position)",
        "the last good state is saved with the RNG of the later steps (a resume draws other noise)",
        (STEP_CHECKS, "-k", "resuming_after"),
    ),
    Mutant(
        "ema-ignores-skipped-step",
        CORE + "training/ema.py",
        "weight = (1.0 - skip) * (1.0 - self.decay)",
        "weight = 1.0 - self.decay",
        "the EMA keeps averaging after a bad step while the optimizer skips it",
        (STEP_CHECKS, "-k", "ema"),
    ),
    Mutant(
        "save-before-the-window-is-read",
        CORE + "training/runner.py",
        "if saving or sampling or validating:",
        "if sampling or validating:",
        "a checkpoint and state are saved before the host read the steps since the last read",
        (RUNNER_TESTS, "-k", "nan_loss"),
    ),
    # -- family units ----------------------------------------------------------------------------
    Mutant(
        "qwen-template-drop-33",
        QWEN + "diffsynth_qwen_image/units.py",
        "PROMPT_TEMPLATE_DROP = 34",
        "PROMPT_TEMPLATE_DROP = 33",
        "one Qwen-Image template token too few dropped (the DiT sees '\\n' before the prompt)",
        (QWEN + "tests/test_qwen_image_parity.py::test_image_matches_diffusers",),
    ),
    Mutant(
        "qwen-pack-transposed",
        QWEN + "diffsynth_qwen_image/latents.py",
        "x = x.permute(0, 2, 4, 1, 3, 5)",
        "x = x.permute(0, 4, 2, 1, 3, 5)",
        "Qwen-Image latent tokens packed column-major (the image transposed for the DiT)",
        (QWEN + "tests/test_qwen_image_parity.py", "-k", "packing"),
    ),
    Mutant(
        "qwen-padding-tokens-kept",
        QWEN + "diffsynth_qwen_image/units.py",
        "parts = [h[k][self.drop_idx :] for h, k in zip(hidden, keep, strict=True)]",
        "parts = [h[self.drop_idx :] for h, k in zip(hidden, keep, strict=True)]",
        "a batch of prompts keeps the tokenizer's padding as valid prompt tokens",
        (QWEN + "tests/test_qwen_image_parity.py", "-k", "batch_of_prompts"),
    ),
    Mutant(
        "vace-mask-not-mapped",
        VACE + "diffsynth_vace/units.py",
        "mask = ((mask + 1) / 2).clamp(0, 1)",
        "mask = mask.clamp(0, 1)",
        "the VACE mask used in [-1, 1] pixel space (black pixels count as 'keep' and grey as 0)",
        (VACE + "tests/test_vace_parity.py", "-k", "conditioning"),
    ),
    # -- the feature cache key -------------------------------------------------------------------
    Mutant(
        "cache-key-ignores-prompt",
        CORE + "cache/keys.py",
        "        if unit.separate_cfg:\n",
        "        if not unit.separate_cfg:\n",
        "the feature cache key leaves out the prompt: every sample gets the first caption",
        (RUNNER_TESTS, "-k", "feature_cache"),
    ),
    Mutant(
        "cache-key-ignores-image-size",
        CORE + "cache/keys.py",
        'h.update(f"img{value.mode}{value.size}".encode() + value.tobytes())',
        'h.update(f"img{value.mode}".encode() + value.tobytes())',
        "the cache key hashes an image's pixels but not its size (64x32 == 32x64)",
        (KILLS, "-k", "cache_key"),
    ),
    Mutant(
        "cache-ignores-trainable-encoder",
        CORE + "training/cache.py",
        "models = [getattr(pipe, n, None) for n in unit.onload_model_names]",
        "models = [getattr(pipe, n, None) for n in unit.output_params]",
        "a unit whose model is being trained is cached anyway (its features go stale)",
        (KILLS, "-k", "never_cached"),
    ),
    # -- fp8 compute: a wrong scale trains on a wrong gradient, silently -------------------------
    Mutant(
        "fp8-compute-backward-drops-the-weight-scale",
        CORE + "training/fp8_compute.py",
        "data, scale = quantize_rows(rows, columns=weight_scale)",
        "data, scale = quantize_rows(rows)",
        "fp8-compute's input gradient forgets the weight's row scales (off by 1/s per column)",
        ("tests/lowmem/test_fp8_compute.py", "-k", "follow_the_full_precision_layer"),
    ),
    Mutant(
        "fp8-compute-merge-writes-a-copy",
        CORE + "lora/inject.py",
        "        if requantize is not None:\n",
        "        if False:\n",
        "--merge-lora into an fp8-compute base writes into a dequantized copy (merges nothing)",
        ("tests/lowmem/test_fp8_compute.py", "-k", "merged_lora"),
    ),
)
