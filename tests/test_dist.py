"""torchrun: N ranks give what one process gives (design principle 14), on CPU over gloo at toy
sizes, data parallel and FSDP2 (`model.fsdp=true`). Each test starts `python -m
torch.distributed.run --standalone` as a user would start `torchrun`; the weights compare in fp32
(bf16 autocast's rounding, amplified by Adam on near-zero gradients, would blur a tolerance that
shows a real difference: a gradient summed where it should be averaged moves weights by ~lr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.store import Run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "demo_smoke", "-q"]
RL = ["rl.steps=3", "rl.save_every=3", "rl.eval_every=3", "rl.bf16_autocast=false"]


def lab(args: list[str], ranks: int = 1, check: bool = True, background: bool = False):
    """`python -m lab ARGS`, under torchrun with `ranks` processes when ranks > 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = (launcher + ["-m", "lab"] if ranks > 1 else [sys.executable, "-m", "lab"]) + args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("dist")
    lab(["sft", *SMOKE, "--runs-dir", str(runs), "--run-id", "sft"])
    return runs


def weights(run: Path, checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / checkpoint / "model.safetensors")


def logged(run: Path) -> list[dict]:
    """metrics.jsonl without what depends on the machine's speed."""
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "perf/", "wall_time", "eval/time"))}
            for m in Run(run).metrics()]


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and [sorted(x) for x in a] == [sorted(y) for y in b]
    for x, y in zip(a, b):
        for k, v in x.items():
            if isinstance(v, float):
                assert y[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (x.get("step"), k)
            else:
                assert y[k] == v, (x.get("step"), k)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict | None = None) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    if start is not None:  # the runs trained: the agreement is not that of untouched weights
        assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4


SHARDING = {"ddp": [], "fsdp": ["model.fsdp=true"]}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(SHARDING))
def test_rl_on_two_ranks_equals_one(sft_run, how) -> None:
    """Same global batch and seeds: the same weights after 3 steps, the same metrics (rewards,
    KL to the EMA anchor, entropy, losses, gradient norm, held-out accuracy) and the same
    rollouts, every rank's in samples/step_N.jsonl."""
    base = [*SMOKE, f"rl.init={sft_run / 'sft'}", *RL, "--runs-dir", str(sft_run)]
    if not (sft_run / "rl1").exists():
        lab(["rl", *base, "--run-id", "rl1"])
    lab(["rl", *base, *SHARDING[how], "--run-id", f"rl2{how}"], ranks=2)
    one, two = sft_run / "rl1", sft_run / f"rl2{how}"
    assert_same_weights(weights(one, "step_3"), weights(two, "step_3"), weights(sft_run / "sft", "final"))
    assert_same_metrics(logged(one), logged(two))
    for step in (1, 2, 3):
        rows1, rows2 = Run(one).samples(step), Run(two).samples(step)
        assert len(rows2) == 4 * 4  # prompts_per_step x num_generations of the preset, from both ranks
        keys = ("problem_id", "sample", "response", "reward", "kept")
        assert [[r[k] for k in keys] for r in rows1] == [[r[k] for k in keys] for r in rows2]
        assert [r["advantage"] for r in rows2] == pytest.approx([r["advantage"] for r in rows1], abs=1e-5)
    assert Run(two).summary()["eval/acc"] == Run(one).summary()["eval/acc"]
    assert (Run(one).config()["ranks"], Run(two).config()["ranks"]) == (1, 2)  # recorded: times depend on it


@pytest.mark.slow
@pytest.mark.parametrize("how", list(SHARDING))
def test_sft_on_two_ranks_equals_one(sft_run, how) -> None:
    """Each rank trains half of every batch: the same weights and logged losses as one process."""
    base = ["sft", *SMOKE, "sft.bf16_autocast=false", "sft.log_every=5", "--runs-dir", str(sft_run)]
    if not (sft_run / "sft1").exists():
        lab([*base, "--run-id", "sft1"])
    lab([*base, *SHARDING[how], "--run-id", f"sft2{how}"], ranks=2)
    one, two = sft_run / "sft1", sft_run / f"sft2{how}"
    assert_same_weights(weights(one, "final"), weights(two, "final"))
    assert_same_metrics(logged(one), logged(two))
    assert len(Run(two).traces()) == len(Run(one).traces()) == 1000  # synthesized once, by rank 0
    assert Run(two).eval_rows("heldout") == Run(one).eval_rows("heldout")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["forks", "continuations"])
def test_budget_sweep_on_two_ranks_gives_the_same_curve(sft_run, how) -> None:
    """The problems split over the ranks, the rows gathered: the curve, its rows and the
    unconstrained point of one process. "forks": forced answers forked from the KV cache as the
    responses are generated (the transformers default); "continuations": generated apart
    afterwards, as with vLLM (here through the s1 extension, which takes that path), each
    list of continuations split over the ranks."""
    extra = ["budget.extend_wait=1"] if how == "continuations" else []
    base = ["budget", *SMOKE, f"model.name={sft_run / 'sft'}", *extra, "--runs-dir", str(sft_run)]
    lab([*base, "--run-id", f"b1{how}"])
    lab([*base, "--run-id", f"b2{how}"], ranks=2)
    one, two = Run(sft_run / f"b1{how}"), Run(sft_run / f"b2{how}")
    c1, c2 = one.curves(), two.curves()
    assert c1.keys() == c2.keys() and c1
    for name in c1:
        for key in ("points", "parallel", "unconstrained"):
            assert c1[name][key] == c2[name][key], key
        assert c1[name]["unconstrained"] is not None
        assert one.eval_rows(f"budget_{name}") == two.eval_rows(f"budget_{name}")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("how", list(SHARDING))
def test_a_killed_rank_resumes_into_the_uninterrupted_run(sft_run, how) -> None:
    """SIGKILL rank 1 once step 2's checkpoint is written; `--resume` on two ranks goes on from the
    last complete checkpoint (optimizer and EMA anchor gathered whole, resharded on load), and
    every metric logged after it equals the uninterrupted run's."""
    steps = ["rl.steps=40", "rl.save_every=2", "rl.eval_every=0", "rl.bf16_autocast=false"]
    base = ["rl", *SMOKE, f"rl.init={sft_run / 'sft'}", *steps, *SHARDING[how], "--runs-dir", str(sft_run)]
    whole, killed = f"whole{how}", f"killed{how}"
    lab([*base, "--run-id", whole], ranks=2)
    proc = lab([*base, "--run-id", killed], ranks=2, background=True)
    marker = sft_run / killed / "checkpoints" / "step_2" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    ranks = [c for agent in _children(proc.pid) for c in _children(agent)] or _children(proc.pid)
    workers = [p for p in ranks if "lab" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, "the run ended before a rank could be killed"
    rank1 = next(p for p in workers if "RANK=1\0" in Path(f"/proc/{p}/environ").read_text())
    os.kill(rank1, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    stopped_at = Run(sft_run / killed).latest_checkpoint()
    assert stopped_at is not None and Run(sft_run / killed).summary() is None
    lab(["rl", "-q", "--resume", killed, "--runs-dir", str(sft_run)], ranks=2)
    assert_same_metrics(logged(sft_run / whole), logged(sft_run / killed))
    assert_same_weights(weights(sft_run / whole, "step_40"), weights(sft_run / killed, "step_40"))


def test_what_cannot_split_over_the_ranks_is_one_error_before_any_run_folder(sft_run, tmp_path) -> None:
    """prompts_per_step not divisible by the ranks, a one-process command under torchrun, a CUDA
    device on a machine without one, FSDP2 without torchrun or with LoRA: one `error:` line each, from rank 0, and
    nothing written."""
    init = f"rl.init={sft_run / 'sft'}"
    out = lab(["rl", *SMOKE, init, "rl.prompts_per_step=3", "rl.micro_batch_size=4", "--runs-dir", str(tmp_path)], ranks=2, check=False)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode != 0 and errors == [
        "error: rl.prompts_per_step=3 does not divide among 2 ranks (each rank samples prompts_per_step / ranks "
        "prompts): make it a multiple of 2"]
    assert list(tmp_path.iterdir()) == []
    out = lab(["demo", "--no-serve", "--runs-dir", str(tmp_path)], ranks=2, check=False)
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        "error: lab demo runs in one process, not on 2 ranks: start it without torchrun "
        "(the stages sft, rl, eval and budget run under torchrun)"]
    if not torch.cuda.is_available():
        out = lab(["rl", *SMOKE, init, "model.device=cuda", "--runs-dir", str(tmp_path)], check=False)
        assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
            "error: model.device=cuda, but torch sees no CUDA device")
    out = lab(["rl", *SMOKE, init, "model.fsdp=true", "--runs-dir", str(tmp_path)], check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        "error: model.fsdp=true shards the model over torchrun's ranks: start the command with `torchrun")
    out = lab(["rl", *SMOKE, init, "model.fsdp=true", "rl.lora.enabled=true", "--runs-dir", str(tmp_path)],
              ranks=2, check=False)
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        "error: model.fsdp shards full fine-tuning; with LoRA the trained state is small: turn LoRA off or leave "
        "model.fsdp=false (every rank holds the model)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_resume_on_a_world_size_the_batch_does_not_divide(sft_run) -> None:
    """A run made on 2 ranks resumes on 1 (its saved state is whole), not on 3 (4 prompts per step)."""
    base = ["rl", *SMOKE, f"rl.init={sft_run / 'sft'}", "rl.steps=2", "rl.save_every=1", "--runs-dir", str(sft_run)]
    lab([*base, "--run-id", "two"], ranks=2)
    before = (sft_run / "two" / "metrics.jsonl").read_bytes()
    out = lab(["rl", "-q", "--resume", "two", "rl.steps=3", "--runs-dir", str(sft_run)], ranks=3, check=False)
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        "error: rl.prompts_per_step=4 does not divide among 3 ranks (each rank samples prompts_per_step / ranks "
        "prompts): make it a multiple of 3"]
    assert (sft_run / "two" / "metrics.jsonl").read_bytes() == before
    lab(["rl", "-q", "--resume", "two", "rl.steps=3", "--runs-dir", str(sft_run)])
    assert Run(sft_run / "two").summary()["step"] == 3
    assert json.loads((sft_run / "two" / "config.json").read_text())["config"]["rl"]["steps"] == 3


def test_a_rank_other_than_0_writes_what_save_pretrained_writes(tmp_path) -> None:
    """transformers' `save_pretrained` writes no weights on a rank other than 0 once
    torch.distributed is initialised; a rank's own copy (its vLLM engine's folder) is written by
    `core.models._write_weights`: the same files and tensors."""
    from core.models import _write_weights, build_tiny_model

    model, _ = build_tiny_model(task="minimath")
    model.save_pretrained(tmp_path / "hf")
    _write_weights(model, tmp_path / "ours", None)
    ours, hf = load_file(tmp_path / "ours" / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert ours.keys() == hf.keys() and all(torch.equal(ours[k], hf[k]) for k in hf)
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(p.name for p in (tmp_path / "hf").iterdir())


def _sum_gradients_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    from core.dist import Dist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    both, one, none = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), float(rank + 1))
    one.grad = torch.ones(3) if rank == 0 else None
    Dist(rank, 2, rank, joined=True).sum_gradients([both, one, none])
    grads = {"both": both.grad, "one": one.grad, "none": none.grad}
    Path(f"{out}.{rank}").write_text(json.dumps({k: None if g is None else g.tolist() for k, g in grads.items()}))
    tdist.destroy_process_group()


def test_summed_gradients_keep_a_gradient_no_rank_has_missing(tmp_path) -> None:
    """The data-parallel reduction: sums over ranks, a gradient one rank lacks counts as zeros,
    and one that no rank has stays None (AdamW then skips the parameter, as in one process)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sum_gradients_worker, args=(port, str(tmp_path / "g")), nprocs=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"g.{rank}").read_text())
        assert got == {"both": [3.0, 3.0, 3.0], "one": [1.0, 1.0, 1.0], "none": None}
