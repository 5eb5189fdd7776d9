"""torch.distributed for the lab: one process per rank under torchrun, or one process alone.

`python -m lab <command>` started by torchrun (WORLD_SIZE in the environment) joins the process
group (gloo on CPU, NCCL for CUDA tensors) and every stage splits its work by rank: RL the
prompts of a step (a prompt's samples stay on its rank), SFT the sequences of a batch, eval and
budget sweeps the problems. Semantics do not change with the number of ranks (design principle
14): draws are keyed by (seed, prompt, sample) (`core.sampling.draws`), gradients are summed
over ranks with each rank's loss weighted by its share of the global batch's tokens, and rank 0
writes the run folder from rows gathered from every rank. Weights are replicated: after the
gradients' all-reduce every rank takes the same optimizer step (data parallel, DDP's reduction
without its bucketing hooks; ranks run different numbers of forward passes, which those hooks
cannot follow).

Without torchrun `SINGLE` stands for the one process and every collective is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from core.config import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank of world (local_rank on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run folder and speaks."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, n: int) -> range:
        """This rank's contiguous block of n items (blocks differ by at most one item)."""
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank (pickled in memory, never from disk)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        return self._reduce(values, tdist.ReduceOp.SUM)

    def max(self, values: Sequence[float]) -> list[float]:
        """Element-wise maxima over ranks."""
        return self._reduce(values, tdist.ReduceOp.MAX)

    def _reduce(self, values: Sequence[float], op: Any) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        tdist.all_reduce(t, op=op)
        return t.tolist()

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each trainable parameter's gradient by its sum over ranks (one flat all-reduce
        per dtype and device; a missing gradient counts as zeros and stays missing where it is
        zero on every rank)."""
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
        for p in params:
            groups.setdefault((p.dtype, p.device), []).append(p)
        for ps in groups.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
            tdist.all_reduce(flat)
            offset = 0
            for p in ps:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def _device(self) -> torch.device:
        backend = tdist.get_backend() if tdist.is_initialized() else "gloo"
        return torch.device("cuda", torch.cuda.current_device()) if "nccl" in str(backend) else torch.device("cpu")


SINGLE = Dist()


def launched() -> bool:
    """Whether torchrun (or another launcher that sets WORLD_SIZE and RANK) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def from_env() -> Dist:
    """This process's Dist: SINGLE without a launcher; else joins the process group (once)
    over the launcher's rendezvous (MASTER_ADDR / MASTER_PORT): gloo for CPU tensors and, where
    CUDA is present, NCCL for CUDA tensors with this rank on GPU `LOCAL_RANK`."""
    if not launched():
        return SINGLE
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if world == 1:
        return Dist(0, 1, local)
    if not tdist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            tdist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            tdist.init_process_group("gloo")
    return Dist(rank, world, local)


def check_world(job: Any, dist: Dist) -> None:
    """Settings that cannot run here: ConfigError before any work. A CUDA device asked for
    where there is none; under torchrun, what cannot split over `dist.world` ranks (RL keeps
    each prompt's samples on one rank, so the prompts of a step divide among the ranks; SFT
    splits each batch's sequences)."""
    model = getattr(job, "model", None)
    if getattr(model, "device", None) == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device=cuda, but torch sees no CUDA device on this machine: use model.device=auto "
                          "(cuda where present) or cpu")
    if not dist.active:
        return
    rl, sft = getattr(job, "rl", None), getattr(job, "sft", None)
    if rl is not None and hasattr(rl, "prompts_per_step") and rl.prompts_per_step % dist.world:
        raise ConfigError(f"rl.prompts_per_step={rl.prompts_per_step} does not divide among {dist.world} ranks "
                          f"(each rank samples prompts_per_step / ranks prompts): make it a multiple of {dist.world}")
    if sft is not None and hasattr(sft, "batch_size") and sft.batch_size % dist.world:
        raise ConfigError(f"sft.batch_size={sft.batch_size} does not divide among {dist.world} ranks "
                          f"(each rank trains batch_size / ranks sequences of a batch): make it a multiple of {dist.world}")


def close() -> None:
    """Leave the process group (at the end of a command)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()
