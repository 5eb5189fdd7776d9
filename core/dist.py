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

With `model.fsdp` the weights, gradients and optimizer state are sharded instead (FSDP2:
`fully_shard` on each decoder layer and the root, bf16 compute with fp32 gradient reduction
where bf16 autocast is on): the gradients are reduced inside backward, checkpoints gather the
whole state on rank 0, and every rank runs the same number of forward passes (collectives).

Without torchrun `SINGLE` stands for the one process and every collective is the identity.
Importing this module does not import torch (`Dist` travels through torch-free modules such as
`core.evaluate`); the functions that need it import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from core.config import ConfigError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank of world (local_rank on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # in a process group (started by torchrun, even with one rank)

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
        import torch.distributed as tdist

        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as tdist

        box = [obj if self.main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        return self._reduce(values, "SUM")

    def max(self, values: Sequence[float]) -> list[float]:
        """Element-wise maxima over ranks."""
        return self._reduce(values, "MAX")

    def _reduce(self, values: Sequence[float], op: str) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        import torch
        import torch.distributed as tdist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        tdist.all_reduce(t, op=getattr(tdist.ReduceOp, op))
        return t.tolist()

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each trainable parameter's gradient by its sum over ranks (one flat all-reduce
        per dtype and device). A missing gradient counts as zeros; one missing on every rank stays
        missing, as in one process (AdamW skips such a parameter rather than stepping on zeros)."""
        if not self.active:
            return
        import torch
        import torch.distributed as tdist

        params = [p for p in params if p.requires_grad]
        groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
        for p in params:
            groups.setdefault((p.dtype, p.device), []).append(p)
        for ps in groups.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps]
                             + [torch.tensor([float(p.grad is not None) for p in ps], dtype=ps[0].dtype,
                                             device=ps[0].device)])
            tdist.all_reduce(flat)
            had = flat[-len(ps):].tolist()  # on how many ranks each had a gradient
            offset = 0
            for p, n_ranks in zip(ps, had):
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone() if n_ranks > 0 else None
                offset += n

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as tdist

            tdist.barrier()

    def _device(self) -> torch.device:
        import torch
        import torch.distributed as tdist

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
    import torch
    import torch.distributed as tdist

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not tdist.is_initialized():
        # a rank may wait long for another (rank 0 synthesizing SFT data, a slow evaluation)
        timeout = timedelta(hours=float(os.environ.get("T1LAB_DIST_TIMEOUT_H", "6")))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            tdist.init_process_group("cpu:gloo,cuda:nccl", timeout=timeout)
        else:
            tdist.init_process_group("gloo", timeout=timeout)
    return Dist(rank, world, local, joined=True)


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (transformers' `*DecoderLayer` modules), in order."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def shard_model(model: Any, bf16: bool) -> Any:
    """FSDP2 in place: one unit per decoder layer plus the root (embeddings, final norm, head).
    With `bf16` the units compute in bf16 and reduce gradients in fp32; the sharded weights
    and the optimizer state stay fp32."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gradient_scale(model: Any, dist: Dist) -> float:
    """What a rank's loss is multiplied by so that the reduced gradient is the sum over ranks:
    FSDP2's reduction averages (world), the data-parallel one sums (`Dist.sum_gradients`: 1)."""
    return float(dist.world) if is_sharded(model) else 1.0


def full_state(model: Any, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The whole state dict of a model, sharded or not: on rank 0 (on the CPU; other ranks get
    {}) or, with `everywhere`, on every rank on the model's device. Collective when sharded."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))


def load_full_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every rank passes it) into a model, sharded or not."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: Any, opt: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state (on rank 0 when sharded: collective; keyed by parameter name)."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: Any, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load what `optimizer_state` gave (every rank passes it; resharded to this world size)."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))


def check_world(job: Any, dist: Dist) -> None:
    """Settings that cannot run here: ConfigError before any work. A CUDA device asked for
    where there is none; under torchrun, what cannot split over `dist.world` ranks (RL keeps
    each prompt's samples on one rank, so the prompts of a step divide among the ranks; SFT
    splits each batch's sequences)."""
    import torch

    model = getattr(job, "model", None)
    if getattr(model, "device", None) == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device=cuda, but torch sees no CUDA device on this machine: use model.device=auto "
                          "(cuda where present) or cpu")
    rl, sft = getattr(job, "rl", None), getattr(job, "sft", None)
    if getattr(model, "fsdp", False) and not dist.joined:
        raise ConfigError("model.fsdp=true shards the model over torchrun's ranks: start the command with "
                          "`torchrun --nproc_per_node N -m lab ...` (N may be 1)")
    if getattr(model, "fsdp", False) and any(getattr(getattr(x, "lora", None), "enabled", False) for x in (rl, sft)):
        raise ConfigError("model.fsdp shards full fine-tuning; with LoRA the trained state is small: "
                          "turn LoRA off or leave model.fsdp=false (every rank holds the model)")
    if not dist.active:
        return
    if rl is not None and hasattr(rl, "prompts_per_step") and rl.prompts_per_step % dist.world:
        raise ConfigError(f"rl.prompts_per_step={rl.prompts_per_step} does not divide among {dist.world} ranks "
                          f"(each rank samples prompts_per_step / ranks prompts): make it a multiple of {dist.world}")
    if sft is not None and hasattr(sft, "batch_size") and sft.batch_size % dist.world:
        raise ConfigError(f"sft.batch_size={sft.batch_size} does not divide among {dist.world} ranks "
                          f"(each rank trains batch_size / ranks sequences of a batch): make it a multiple of {dist.world}")


def close() -> None:
    """Leave the process group (at the end of a command). Not where vLLM engines run in this
    process: their shutdown (at exit) takes down the groups they made on top of it, and fails
    on a group already gone."""
    import sys

    import torch.distributed as tdist

    if tdist.is_initialized() and "vllm" not in sys.modules:
        tdist.destroy_process_group()
