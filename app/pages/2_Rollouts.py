"""RL rollouts of one step: one prompt's samples side by side with reward parts, advantage,
finish reason, token count and whether oversampling kept it; each response's tokens coloured by
their log-prob where the run stored them (hover: the value); prompts whose kept samples all have
advantage 0 (no RLOO signal) flagged and counted; filters and text search; the same prompt at
another step (second step picker, or a link: ?run=&step=&prompt=)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from app.common import follow, load_sample_steps, load_samples, page_header, pick_run, run_ids  # noqa: E402
from core.report.rollouts import no_signal_prompts, strip_html, strip_pieces  # noqa: E402
from core.report.views import (  # noqa: E402
    PENALTIES,
    SAMPLE_TAGS,
    filter_samples,
    is_kept,
    prompt_samples,
    prompt_table,
    step_overview,
)

PER_ROW = 4

runs = [r for r in page_header("Rollouts") if load_sample_steps(r)]
runs_dir = st.session_state["runs_dir"]
if not runs:
    follow(lambda: run_ids(runs_dir))  # a run that starts shows up
    st.info("No run with RL rollouts (samples/step_*.jsonl) in this folder.")
    st.stop()
run = pick_run("Run", runs)
steps = load_sample_steps(run)
follow(lambda: (run_ids(runs_dir), tuple(load_sample_steps(run))))  # new runs and steps appear
# on by default for a running run opened without a step in its link; kept per run once set
newest = st.sidebar.toggle("Follow the newest step", value=run.status() == "running" and "step" not in st.query_params,
                           key=f"newest-{run.id}", help="while on, the page moves to each new step as the run writes it")
asked = st.query_params.get("step", "")
step = int(asked) if asked.isdigit() and int(asked) in steps and not newest else steps[-1]
if len(steps) > 1:
    step = st.sidebar.select_slider("Step", options=steps, value=step, disabled=newest)
st.sidebar.caption(f"{len(steps)} steps with rollouts ({steps[0]}..{steps[-1]})")
skipped: list[str] = []
rows = load_samples(run, step, skipped)
for reason in skipped:
    st.warning(f"Left out: {reason}")

over = step_overview(rows)
silent = no_signal_prompts(rows)
cols = st.columns(6)
cols[0].metric("samples", over["samples"])
cols[1].metric("accuracy", f"{over['acc']:.1%}")
cols[2].metric("mean reward", f"{over['reward_mean']:+.3f}")
cols[3].metric("truncated", f"{over['truncated_frac']:.1%}")
cols[4].metric("kept", f"{over['kept_frac']:.1%}")
cols[5].metric("no-signal prompts", f"{len(silent)} / {len({r.get('problem_id') for r in rows})}",
               help="every kept sample of the prompt has advantage 0 (the same reward, none penalised): "
               "RLOO learns nothing from it")
has_strip = any(r.get("tokens") for r in rows)
colour = st.sidebar.toggle("Colour tokens by log-prob", value=has_strip, disabled=not has_strip,
                           help="deeper orange: less likely under the policy (hover a token for its value)"
                           if has_strip else "this run's rollouts stored no per-token log-probs")

left, right = st.columns([2, 3])
tags = left.multiselect("Show samples that are (any of)", SAMPLE_TAGS, key="tags")
query = right.text_input("Search question / response", key="query")
shown = filter_samples(rows, tags, query)
prompts = prompt_table(shown)
if not prompts:
    st.warning("No sample at this step matches the filters.")
    st.stop()
ids = [p["problem_id"] for p in prompts]
labels = {p["problem_id"]: f"{p['question']}  ·  {p['correct']}/{p['n']} correct, "
          f"reward {p['reward_mean']:+.2f}" + ("  ·  no signal" if p["problem_id"] in silent else "")
          for p in prompts}
wanted = st.query_params.get("prompt")
prompt = st.selectbox(f"Prompt ({len(ids)} with matching samples)", ids,
                      index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get)
st.query_params.update(run=run.id, step=str(step), prompt=prompt)


def sample_cards(samples: list[dict], per_row: int = PER_ROW, where=st) -> None:  # noqa: ANN001
    """All samples of one prompt side by side, `per_row` to a row (in `where`: the page or a column)."""
    for start in range(0, len(samples), per_row):
        for col, s in zip(where.columns(per_row) if per_row > 1 else [where], samples[start:start + per_row]):
            box = col.container(border=True)
            mark = ":green[**correct**]" if s.get("correct") else ":red[**wrong**]"
            pen = [p for p in PENALTIES if s.get(p)]
            box.markdown(f"**#{s.get('sample')}** {mark}" + (f" · :orange[penalised: {', '.join(pen)}]" if pen else ""))
            box.caption(f"reward {s.get('reward', 0):+.2f} · advantage {s.get('advantage') or 0:+.3f} · "
                        f"{s.get('num_tokens')} tokens · finish {s.get('finish_reason')} · "
                        f"{'kept' if is_kept(s) else 'not kept'} · {'used' if s.get('used', True) else 'unused'}")
            pieces = strip_pieces(s) if colour else None
            if pieces is None:
                box.code(s.get("response", ""), language=None, wrap_lines=True)
            else:
                done = sum(len(p) for p, _ in pieces)
                box.markdown(strip_html(pieces, str(s.get("response", ""))[done:]), unsafe_allow_html=True)


samples = prompt_samples(shown, prompt)
others = [s for s in steps if s != step]
beside = st.toggle("Beside another step", value=False, disabled=not others,
                   help="this prompt's samples at two steps, in two columns")
title = f"Step {step}: {len(samples)} samples" + (" · no signal (every advantage 0)" if prompt in silent else "")
if not beside:
    st.subheader(title)
    sample_cards(samples)
    st.subheader("Same prompt at another step")
if not others:
    st.caption("This run has one step with rollouts.")
    st.stop()
other = st.select_slider("Other step", options=others, value=others[-1]) if len(others) > 1 else others[0]
link = "?" + urlencode({"run": run.id, "step": other, "prompt": prompt, "runs": st.session_state["runs_dir"]})
st.markdown(f"[Open this prompt at step {other}]({link})")
again = prompt_samples(load_samples(run, other), prompt)
if beside:  # the two steps in two columns, one card per row
    here, there = st.columns(2)
    here.subheader(title)
    sample_cards(samples, 1, here)
    there.subheader(f"Step {other}: {len(again)} samples")
    sample_cards(again, 1, there)
elif again:
    sample_cards(again)
if not again:
    st.caption(f"Prompt not sampled at step {other}.")
if st.checkbox("Find every step that sampled this prompt"):
    found = [s for s in steps if prompt_samples(load_samples(run, s), prompt)]
    st.write(", ".join(map(str, found)))
