"""The command line: last stdout line is JSON; bad input is one clear line, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

QUICK = [
    "synth.num_problems=200", "sft.max_steps=6", "sft.warmup_steps=1", "sft.batch_size=16",
    "sft.micro_batch_size=8", "eval.num_problems=20", "model.hidden_size=32", "model.num_layers=2",
    "model.num_heads=2", "model.intermediate_size=64", "eval.sampling.max_new_tokens=24",
]


def lab(*args: str, cwd=ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sft_end_to_end_small(tmp_path) -> None:
    out = last_json(lab("sft", "-q", "--runs-dir", str(tmp_path), *QUICK))
    for key in ("run_dir", "eval/acc", "eval/corrected_frac", "time_s", "checkpoint"):
        assert key in out
    run = tmp_path / out["run_dir"].split("/")[-1]
    assert (run / "summary.json").exists() and (run / "checkpoints/final/COMPLETE").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["sft"]["max_steps"] == 6
    rows = [json.loads(x) for x in (run / "eval/heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and {"response", "correct", "finish_reason"} <= set(rows[0])
    # the saved model evaluates through `lab eval`, by run folder
    ev = last_json(lab("eval", "-q", "--runs-dir", str(tmp_path), f"model.name={run}",
                       "eval.num_problems=10", "eval.sampling.max_new_tokens=16"))
    assert ev["eval/n"] == 10 and ev["model"].endswith("checkpoints/final")


def test_synth_then_sft_on_its_traces_plain_and_t1(tmp_path) -> None:
    for style in ("t1", "plain"):
        syn = last_json(lab("synth", "-q", "--runs-dir", str(tmp_path), "synth.num_problems=50",
                            f"synth.style={style}"))
        assert syn["synth/num_traces"] == 50
        out = last_json(lab("sft", "-q", "--runs-dir", str(tmp_path), f"sft.data={syn['run_dir']}", *QUICK))
        assert "eval/acc" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sft.lrr=1"], "unknown config key 'sft.lrr'; did you mean 'sft.lr'?"),
        (["sft.data=/nonexistent/traces.jsonl"], "SFT data file not found"),
        (["model.name=/nonexistent/model"], "model folder not found"),
        (["--preset", "nope"], "preset not found: nope"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message) -> None:
    proc = lab("sft", "-q", "--runs-dir", str(tmp_path), *QUICK, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_traces_name_file_and_line(tmp_path) -> None:
    bad = tmp_path / "traces.jsonl"
    good = json.dumps({"question": "numbers 1 2 3 target 3", "response": "answer 1 + 2"})
    bad.write_text(good + "\n{not json\n" + good + "\n")
    proc = lab("sft", "-q", "--runs-dir", str(tmp_path / "runs"), f"sft.data={bad}", *QUICK)
    assert proc.returncode == 2 and f"{bad}:2" in proc.stderr
    assert bad.read_text().count("\n") == 3  # the user's file is untouched
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = lab("sft", "-q", "--runs-dir", str(tmp_path / "runs"), f"sft.data={empty}", *QUICK)
    assert proc.returncode == 2 and "is empty" in proc.stderr


def test_config_listing() -> None:
    proc = lab("config", "sft")
    assert proc.returncode == 0 and "sft.lr" in proc.stdout and "synth.guided_prob" in proc.stdout


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("rl", ["rl.init=/nonexistent/model"], "model folder not found"),
        ("rl", [], "no complete SFT run"),
        ("eval", [], "needs a trained model"),
        ("sft", ["sft.data=/nonexistent/traces.jsonl"], "SFT data file not found"),
        ("synth", ["task.name=tests/data/math500_20.jsonl", "teacher.models=/nonexistent/teacher"],
         "model folder not found"),
        ("budget", ["model.name=/nonexistent/model"], "model folder not found"),
        ("eval", ["model.name=x", "--sampler", "vllm"], "needs vLLM"),
        ("budget", ["model.name=x", "budget.mode=summarizer", "budget.summarizer=/nonexistent/s"], "not found"),
        ("reproduce", ["rl.micro_batch_size=96"], "the k4 RL variant"),  # 12 prompts x K=4 = 48
    ],
)
def test_bad_input_leaves_no_run_folder(tmp_path, command, args, message) -> None:
    runs = tmp_path / "runs"
    proc = lab(command, "-q", "--runs-dir", str(runs), *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


MATH500_20 = str(ROOT / "tests" / "data" / "math500_20.jsonl")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task.name=math500"], "task.name=math500 is an evaluation set: never train on it"),
        ([f"task.name={MATH500_20}"], "20 of its 20 problems are in math500"),
        (["task.name=nobody/no-such-dataset"], "could not reach the Hugging Face hub"),
        (["task.name=tests/data/missing.jsonl"], "not found"),
    ],
)
def test_rl_on_an_evaluation_set_is_refused_before_any_run_folder(tmp_path, tiny_model_dir, args, message) -> None:
    runs = tmp_path / "runs"
    proc = lab("rl", "-q", "--runs-dir", str(runs), f"rl.init={tiny_model_dir}", f"eval.task={MATH500_20}", *args,
               timeout=120)
    assert proc.returncode == 2, proc.stderr[-1000:]
    assert message in proc.stderr and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not runs.exists() or not any(runs.iterdir())


def test_math_training_file_without_an_answer_names_the_line(tmp_path, tiny_model_dir) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": "4"}) + "\n"
                     + json.dumps({"problem": "What is 3 + 3?"}) + "\n")
    runs = tmp_path / "runs"
    proc = lab("rl", "-q", "--runs-dir", str(runs), f"rl.init={tiny_model_dir}", f"task.name={train}",
               f"eval.task={MATH500_20}", timeout=120)
    assert proc.returncode == 2 and f"{train}:2: missing field 'answer'" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_rl_on_a_math_training_file_evaluates_on_the_benchmark(tmp_path) -> None:
    """`lab rl task.name=<train .jsonl>`: trains on the file (decontaminated: a row that is a
    MATH500 problem is dropped and counted), evaluates held-out on eval.task."""
    from core.models import TinySpec, build_tiny_model, save_policy

    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
                                  task="minimath")
    policy = save_policy(model, tok, tmp_path / "policy")
    bench = json.loads((ROOT / "tests" / "data" / "math500_20.jsonl").read_text().splitlines()[3])
    rows = [{"problem": f"What is ${i} + {i + 1}$?", "answer": str(2 * i + 1)} for i in range(8)]
    rows.append({"problem": bench["problem"], "answer": bench["answer"]})
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = lab("rl", "-q", "--runs-dir", str(tmp_path / "runs"), f"task.name={train}", f"rl.init={policy}",
               f"eval.task={MATH500_20}", "eval.num_problems=4", "eval.sampling.max_new_tokens=16",
               "rl.steps=2", "rl.prompts_per_step=2", "rl.num_generations=2", "rl.micro_batch_size=4",
               "rl.warmup_steps=1", "rl.sampling.max_new_tokens=16", "rl.eval_every=0", "rl.save_every=2")
    out = last_json(proc)
    assert out["eval/task"] == "math500_20" and out["eval/n"] == 4
    assert out["data/decontaminated"] == 1 and out["data/train_problems"] == 8
    assert "decontamination: dropped 1 training problems" in proc.stdout + proc.stderr


def test_model_of_another_embedded_task_is_refused(tmp_path) -> None:
    """The usual slip: RL from a minimath SFT run without `--preset minimath` (task.name stays
    pairsum): refused before any run folder, naming the option and the fix."""
    from core.config import SFTJob, TaskConfig
    from core.models import TinySpec, build_tiny_model, save_policy
    from core.overrides import to_dict
    from core.store import new_run

    runs = tmp_path / "runs"
    sft = new_run(runs, "sft", to_dict(SFTJob(task=TaskConfig(name="minimath"))))
    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
                                  task="minimath")
    final = sft.begin_checkpoint(sft.checkpoint_dir("final"))
    save_policy(model, tok, final)
    sft.mark_checkpoint_complete(final)
    sft.write_summary({})
    before = sorted(runs.iterdir())
    proc = lab("rl", "-q", "--runs-dir", str(runs), f"rl.init={sft.path}", timeout=120)
    assert proc.returncode == 2
    assert f"rl.init={sft.path}" in proc.stderr and "was trained on task minimath, but task.name=pairsum" in proc.stderr
    assert "--preset minimath" in proc.stderr
    assert sorted(runs.iterdir()) == before
