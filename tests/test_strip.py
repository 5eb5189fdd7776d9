"""Per-token log-probs stored in rollout rows (core.strip) and their alignment with the text."""

from __future__ import annotations

import math

from core.strip import LP_SCALE, MAX_TOKENS, decode_strip, encode_strip


def test_strip_round_trips_pieces_and_quantised_logprobs() -> None:
    text = "try 3 + 4 = 7 ok"
    lengths = [3, 2, 2, 2, 2, 2, 3]
    lps = [-0.01, -2.0, -0.3, -20.0, float("-inf"), 0.0, -1.234]
    got = decode_strip(encode_strip(lps, lengths), text)
    assert [p for p, _ in got] == ["try", " 3", " +", " 4", " =", " 7", " ok"]
    for (_, lp), want in zip(got, lps):
        assert abs(lp - max(want, -255 / LP_SCALE)) <= 0.5 / LP_SCALE if math.isfinite(want) else lp == -255 / LP_SCALE


def test_strip_is_bounded_and_a_bad_entry_hides_only_itself() -> None:
    n = MAX_TOKENS + 500
    entry = encode_strip([-1.0] * n, [1] * n)
    assert entry["n"] == MAX_TOKENS and len(decode_strip(entry, "x" * n)) == MAX_TOKENS
    assert len(entry["lp"]) < 200  # compressed: a constant strip is tiny
    assert encode_strip([-1.0, -2.0], None)["len"] is None
    assert decode_strip(encode_strip([-1.0, -2.0], None), "ab") is None
    assert decode_strip({"lp": "not base64!", "len": "x"}, "ab") is None
    assert decode_strip(encode_strip([-1.0], [5]), "ab") is None  # longer than the text
    assert decode_strip(None, "ab") is None


def test_piece_lengths_follow_the_tokenizer(tiny_model_dir) -> None:
    """Each token's piece of the decoded text, for the embedded tokenizers: the pairsum one and
    the byte-level BPE of minimath, where a character split over bytes goes to the token that
    completes it."""
    from transformers import AutoTokenizer

    from core.models import build_tiny_model
    from core.sampling.text import decode_text, piece_lengths, token_texts

    pairsum = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, bpe = build_tiny_model(task="minimath")
    for tok, sample in ((pairsum, "try 12 + 30 = 42 larger\nanswer 12 + 30"),
                        (bpe, "Try $x = 7$: $3 \\cdot 7 + 5 = 26$, too small. θ = π/2 ✓ naïve")):
        texts = token_texts(tok)
        ids = tok(sample, add_special_tokens=False)["input_ids"]
        text = decode_text(tok, ids)
        lengths = piece_lengths(tok, ids, text, texts)
        assert lengths is not None and len(lengths) == len(ids) and sum(lengths) == len(text)
        assert piece_lengths(tok, ids, text + "!", texts) is None  # tokens that do not spell the text
    assert "θ" in text and any(k == 0 for k in lengths)  # a multi-byte character over several tokens


def test_strip_html_colours_improbable_tokens_and_escapes() -> None:
    from core.report.rollouts import no_signal_prompts, strip_html, strip_pieces

    row = {"response": "try <3>\nok", "tokens": encode_strip([-0.01, -3.0, -9.0], [3, 4, 3])}
    pieces = strip_pieces(row)
    assert [p for p, _ in pieces] == ["try", " <3>", "\nok"]
    page = strip_html(pieces)
    assert "&lt;3&gt;" in page and "<br>ok" in page
    assert 'rgba(255,120,0,0.00)">try' in page and 'rgba(255,120,0,0.85)"><br>ok' in page  # plain, deepest
    assert 'title="log p -3.00 (p 0.05)"' in page
    assert strip_pieces({"response": "x"}) is None
    rows = [{"problem_id": "a", "advantage": 0.0}, {"problem_id": "a", "advantage": None},
            {"problem_id": "b", "advantage": 0.0}, {"problem_id": "b", "advantage": -1.0},
            {"problem_id": "c", "advantage": -1.0}, {"problem_id": "c", "advantage": -1.0}]
    assert no_signal_prompts(rows) == {"a"}  # c: all penalised, still pushed down


def test_math_traces_as_markdown_keep_latex_and_escape_prose() -> None:
    from core.report.rollouts import markdown_keeping_math, trace_markdown
    from core.tasks.minimath import parse_minimath_trace

    assert markdown_keeping_math("x_1 * 2 is $x_1 \\cdot 2$") == "x\\_1 \\* 2 is $x_1 \\cdot 2$"
    assert markdown_keeping_math("so \\(\\frac{1}{2}\\) and\n\\[x^2\\]") == "so $\\frac{1}{2}$ and  \n$$x^2$$"
    import random

    from core.synth.minimath import synthesize_trace
    from core.tasks.minimath import linear_problem

    row = synthesize_trace(linear_problem(3, 5, 8), random.Random(1), "t1", 0.0, 0.0, 30)
    lines = trace_markdown(parse_minimath_trace(row["response"]))
    assert any(line.startswith(":red[**attempt failed**] Try $x = ") for line in lines)
    assert any(line.startswith(":blue[**check") for line in lines) and lines[-1].startswith(":rainbow[**answer**]")
    assert lines[-1].endswith("$\\boxed{8}$")
    assert markdown_keeping_math("Final answer: \\boxed{\\frac{2}{3}}") == "Final answer\\: $\\boxed{\\frac{2}{3}}$"


def test_piece_lengths_do_not_decode_long_responses_token_by_token() -> None:
    """The in-context alignment costs two decodes per token: past SLOW_PIECES_MAX tokens a
    response that only it can align gets no strip lengths (None) instead."""
    from core.models import build_tiny_model
    from core.sampling.text import SLOW_PIECES_MAX, decode_text, piece_lengths, token_texts

    _, bpe = build_tiny_model(task="minimath")
    texts = token_texts(bpe)

    def lengths(n: int) -> tuple[list[int] | None, int]:
        ids = bpe("θ = π " * n, add_special_tokens=False)["input_ids"]  # split over bytes: the slow path
        return piece_lengths(bpe, ids, decode_text(bpe, ids), texts), len(ids)

    short, n_short = lengths(10)
    long, n_long = lengths(SLOW_PIECES_MAX // 4)
    assert short is not None and n_short < SLOW_PIECES_MAX
    assert long is None and n_long > SLOW_PIECES_MAX
