"""Block swap (``--blocks-to-swap N``): N transformer blocks live in CPU memory.

What moves: the *frozen* weights of N of a model's repeated blocks (``ModelFamily.blocks``,
through :func:`~diffsynth_core.blocks.repeated_blocks`). Each such weight leaves the module's
parameters; its one copy of record (the *master*) stays in CPU memory (pinned when the device
is a GPU) and never changes, because it is frozen. Trained weights (LoRA) stay on the device
as ordinary parameters: the optimizer, the gradients and the optimizer state never move, and
nothing is ever copied back to the CPU.

When: a block's weights are copied to the device ahead of use -- in forward, the next swapped
block in the *observed* order of use (Wan VACE runs its VACE blocks before the main ones; the
first forward, before any order is known, guesses the declared order); in backward, the
previous one. A copy runs on a side CUDA stream, overlapping with compute; at most two
swapped blocks are on the device at once (the one in use and the one coming). Their device
copies are plain tensors that the module attributes point to while the block is resident; a
copy lives as long as anything holds it, so a copy autograd still needs is never freed early.

Backward needs the weights again. With gradient checkpointing the block's forward is
recomputed inside backward (its hooks fire again and load it). Without it, autograd saves the
weights for backward: a saved-tensor hook records a small handle instead of the device copy
and fetches the block again when backward unpacks it, so the graph does not keep every block
on the device. The hook passes everything else on to the hooks below it (checkpointing's).

On a machine without a GPU the "device" is the CPU: the copies are real copies, so tests see
the schedule, the residency and the bitwise equality of the losses with and without swap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..blocks import repeated_blocks
from ..errors import ConfigError

Trace = list[tuple[str, int, str]]  # (what, block index, phase) for tests


@dataclass
class _Loaded:
    """The device copies of one swapped block, and the event their copy ends with."""

    copies: list[torch.Tensor]
    event: Any = None  # torch.cuda.Event on a GPU
    waited: bool = False


@dataclass(frozen=True)
class _Handle:
    """What autograd keeps of a swapped weight it saved: block, weight, the view's layout."""

    block: int
    weight: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


def spread(total: int, count: int) -> list[int]:
    """``count`` block indices spread evenly over ``total`` (the last block always among
    them): between two swapped blocks the resident ones compute while the copy runs."""
    return sorted({round((k + 1) * total / count) - 1 for k in range(count)})


class BlockSwap:
    """Keeps the frozen weights of ``blocks[i]`` for ``i`` in ``swapped`` in CPU memory."""

    def __init__(self, blocks: list[torch.nn.Module], swapped: list[int], device: Any) -> None:
        self.blocks, self.swapped = blocks, list(swapped)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.pin = cuda
        self.trace: Trace | None = None  # set to [] to record loads, uses and releases
        # per swapped block: (module, attribute name) of each weight, and its CPU master
        self.slots: dict[int, list[tuple[torch.nn.Module, str]]] = {}
        self.masters: dict[int, list[torch.Tensor]] = {}
        self.loaded: dict[int, _Loaded] = {}
        self.order: list[int] = []  # swapped blocks in the order the last forward used them
        self._recording: list[int] = []
        self._current: tuple[int, str] | None = None
        self._callback_task = -1
        self._contexts: list[Any] = []
        self._hooks: list[Any] = []

    # -- installing ------------------------------------------------------------------------

    def install(self) -> BlockSwap:
        """Move the swapped blocks' frozen weights to CPU masters; hook every swapped block."""
        for index in self.swapped:
            self._check_frozen(index)
        for index in self.swapped:
            self.slots[index], self.masters[index] = [], []
            for module in self.blocks[index].modules():
                for name, param in list(module._parameters.items()):
                    if param is None or param.requires_grad:
                        continue  # trained weights (LoRA) stay on the device
                    master = param.detach().to("cpu", copy=True)
                    master = master.pin_memory() if self.pin else master
                    del module._parameters[name]
                    module.__dict__[name] = master  # not a parameter: .to() leaves it alone
                    self.slots[index].append((module, name))
                    self.masters[index].append(master)
            block = self.blocks[index]
            self._hooks.append(block.register_forward_pre_hook(self._before(index)))
            self._hooks.append(block.register_forward_hook(self._after(index), always_call=True))
        return self

    def _check_frozen(self, index: int) -> None:
        trained = [
            name for name, p in self.blocks[index].named_parameters()
            if p.requires_grad and "lora_" not in name
        ]  # fmt: skip
        if trained:
            raise ConfigError(
                f"--blocks-to-swap: block {index} has fully trained weights ({trained[0]} ...); "
                "block swap keeps only frozen weights in CPU memory: leave the model out of "
                "--trainable-models, or leave --blocks-to-swap out"
            )

    def uninstall(self) -> None:
        """Put every weight back as a frozen parameter on the device; remove the hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for index in list(self.loaded):
            self._release(index)
        for index, slots in self.slots.items():
            for (module, name), master in zip(slots, self.masters[index], strict=True):
                del module.__dict__[name]
                weight = master.to(self.device, copy=True)
                module._parameters[name] = torch.nn.Parameter(weight, requires_grad=False)
        self.slots.clear()
        self.masters.clear()

    def resident(self) -> set[int]:
        """The swapped blocks whose weights are on the device now."""
        return set(self.loaded)

    def bytes_per_block(self) -> dict[int, int]:
        return {i: sum(m.numel() * m.element_size() for m in ms) for i, ms in self.masters.items()}

    # -- the schedule ----------------------------------------------------------------------

    def _before(self, index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any) -> None:
            phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
            self.use(index, phase)
            context = _saved_weights(self) if torch.is_grad_enabled() else None
            if context is not None:
                context.__enter__()
            self._contexts.append(context)

        return hook

    def _after(self, index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            context = self._contexts.pop() if self._contexts else None
            if context is not None:
                context.__exit__(None, None, None)
            if self._current != (index, "forward"):
                return  # a recomputation in backward: the block's backward comes next
            self._current = None
            if not (torch.is_grad_enabled() and index == self._last_in_forward()):
                self._release(index)  # (the last block is the first backward needs: keep it)

        return hook

    def use(self, index: int, phase: str) -> list[torch.Tensor]:
        """Block ``index`` is about to run (``phase`` forward or backward): have it on the
        device, start copying the next one, release the rest; its device copies."""
        if self._current == (index, phase) and index in self.loaded:
            return self.loaded[index].copies
        if phase == "forward":
            self._record(index)
        else:
            self._note_backward()
        self._trace("use", index, phase)
        loaded = self._load(index, phase)
        self._wait(loaded)
        for (module, name), copy in zip(self.slots[index], loaded.copies, strict=True):
            module.__dict__[name] = copy
        coming = self._next(index, phase)
        for other in [i for i in self.loaded if i not in (index, coming)]:
            self._release(other)
        if coming is not None:
            self._load(coming, phase)
        self._current = (index, phase)
        return loaded.copies

    def _record(self, index: int) -> None:
        if index in self._recording:  # a new forward began
            self.order, self._recording = self._recording, []
        self._recording.append(index)

    def _note_backward(self) -> None:
        if self._recording:
            self.order, self._recording = self._recording, []
        task = torch._C._current_graph_task_id()
        if task != -1 and task != self._callback_task:
            self._callback_task = task
            engine: Any = torch.autograd.Variable._execution_engine
            engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        """After backward: release everything; the next forward's first block comes now."""
        self._current = None
        first = self.order[0] if self.order else None
        for index in [i for i in self.loaded if i != first]:
            self._release(index)
        if first is not None:
            self._load(first, "backward")

    def _order_now(self) -> list[int]:
        return self.order if self.order else self.swapped

    def _last_in_forward(self) -> int:
        return self._recording[-1] if len(self._recording) == len(self.swapped) else self._order_now()[-1]

    def _next(self, index: int, phase: str) -> int | None:
        order = self._order_now()
        if phase == "backward":
            order = order[::-1]
        if index not in order:
            return None
        position = order.index(index) + 1
        return order[position] if position < len(order) else None

    # -- copies ----------------------------------------------------------------------------

    def _load(self, index: int, phase: str) -> _Loaded:
        if index in self.loaded:
            return self.loaded[index]
        self._trace("load", index, phase)
        if self.stream is None:
            copies = [m.to(self.device, copy=True) for m in self.masters[index]]
            loaded = _Loaded(copies)
        else:
            with torch.cuda.stream(self.stream):
                copies = [m.to(self.device, non_blocking=True, copy=True) for m in self.masters[index]]
                event = torch.cuda.Event()
                event.record(self.stream)
            loaded = _Loaded(copies, event)
        for weight, copy in enumerate(copies):
            copy._diffsynth_swap = (index, weight)  # type: ignore[attr-defined]  # found by _pack
        self.loaded[index] = loaded
        return loaded

    def _wait(self, loaded: _Loaded) -> None:
        if loaded.event is None or loaded.waited:
            return
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(loaded.event)
        for copy in loaded.copies:  # the allocator must not reuse them before compute is done
            copy.record_stream(stream)
        loaded.waited = True

    def _release(self, index: int) -> None:
        if self.loaded.pop(index, None) is None:
            return
        self._trace("release", index, "")
        for (module, name), master in zip(self.slots[index], self.masters[index], strict=True):
            module.__dict__[name] = master
        if self._current is not None and self._current[0] == index:
            self._current = None

    def _trace(self, what: str, index: int, phase: str) -> None:
        if self.trace is not None:
            self.trace.append((what, index, phase))

    # -- what autograd saves ---------------------------------------------------------------

    def pack(self, tensor: torch.Tensor) -> Any:
        tag = getattr(tensor, "_diffsynth_swap", None)
        if tag is None and tensor._base is not None:
            tag = getattr(tensor._base, "_diffsynth_swap", None)
        if tag is None:
            return None
        return _Handle(tag[0], tag[1], tuple(tensor.size()), tuple(tensor.stride()),
                       int(tensor.storage_offset()))  # fmt: skip

    def unpack(self, handle: _Handle) -> torch.Tensor:
        copy = self.use(handle.block, "backward")[handle.weight]
        return copy.as_strided(handle.size, handle.stride, handle.offset)


def _saved_weights(swap: BlockSwap) -> Any:
    """Saved-tensor hooks that keep handles of swapped weights and hand every other tensor to
    the hooks that were active before (non-reentrant checkpointing's, or none)."""
    below = torch._C._autograd._top_saved_tensors_default_hooks(False)
    pack_below, unpack_below = below if below is not None else (None, None)

    def pack(tensor: torch.Tensor) -> Any:
        handle = swap.pack(tensor)
        if handle is not None:
            return handle
        return (pack_below(tensor),) if pack_below is not None else (tensor,)

    def unpack(saved: Any) -> torch.Tensor:
        if isinstance(saved, _Handle):
            return swap.unpack(saved)
        return unpack_below(saved[0]) if unpack_below is not None else saved[0]

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def install_block_swap(pipe: Any, model: str, count: int, device: Any) -> BlockSwap:
    """Swap ``count`` blocks of pipeline model ``model``, then move everything else of the
    pipeline to ``device`` (load the pipeline on the CPU first: the swapped weights never
    need to fit on the device)."""
    blocks = repeated_blocks(pipe, model, "--blocks-to-swap")
    if count > len(blocks):
        raise ConfigError(
            f"--blocks-to-swap {count}: {model!r} of {pipe.family.name!r} has {len(blocks)} "
            f"blocks; give at most {len(blocks)}"
        )
    swap = BlockSwap(blocks, spread(len(blocks), count), device).install()
    pipe.to(device)
    pipe.device = torch.device(device)
    pipe.block_swap = swap  # (for tests and the start-up summary)
    return swap
