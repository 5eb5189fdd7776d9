"""Every prompt the teacher pipeline sends, in one place (T1 section 1).

Stages: attempt -> critique (wrong attempt) / verification (right attempt) -> merge -> rewrite.
Each prompt is the content of one user message; chat teachers get it inside their chat
template, completion endpoints get it as plain text. Templates use str.format fields only, so
braces meant for LaTeX are doubled.

The gold answer is shown to the critic and to the merger: the paper labels each attempt against
the gold answer before asking for critiques, and a teacher that knows the target writes
reflections that point at the real mistake. The prompts ask it not to reveal that it was told.
"""

from __future__ import annotations

from core.tasks.math import PROMPT_TEMPLATE

# Attempt: the exact prompt the student model sees for a math problem, so the attempts (and the
# wording of the merged trace built from them) stay close to what the student will generate.
ATTEMPT = PROMPT_TEMPLATE

# Critique of a wrong attempt: becomes the reflection after that attempt in the merged trace,
# so it is written in the first person, as the solver noticing the slip ("Wait, ...").
CRITIQUE_WRONG = """You are reviewing a solution to a math problem.

Problem:
{question}

Solution:
{attempt}

Its final answer, {predicted}, is wrong; the correct answer is {answer}. In the first person, as \
the solver re-reading their own work, explain briefly which step is wrong and why. Start with \
"Wait," and do not write a new full solution. Do not say that you were told the correct answer."""

# Verification of a right attempt: becomes the self-verification that closes the merged trace,
# so it checks the answer by another route instead of repeating the solution.
VERIFY_RIGHT = """You are reviewing a solution to a math problem.

Problem:
{question}

Solution:
{attempt}

Its final answer, {predicted}, is correct. In the first person, as the solver, write a short \
self-verification that checks this answer by a different route (substitute it back, test a \
special case, estimate, or redo the key step another way). Start with "Let me verify" and keep \
it under 150 words."""

# Merge: the paper's central step. Problem, labelled attempts and their critiques become ONE
# reasoning path shaped attempt -> reflection -> ... -> answer -> self-verification.
MERGE = """Below are a math problem, its correct final answer, and several attempts at it in \
order, each followed by a review note.

Write ONE continuous chain of thought, in the first person, that
1. begins with the first attempt,
2. after each failed attempt reflects on its mistake using the note (start the reflection with \
"Wait," or "Hmm,") and then tries again,
3. ends with a correct solution and the final answer written as \\boxed{{...}},
4. closes with a short self-verification of that answer.
Do not mention notes, reviews, attempt numbers, or that the answer was given.

Problem:
{question}

Correct final answer: {answer}

{steps}"""

# One attempt inside MERGE's {steps}; {label} is "failed" or "correct".
MERGE_STEP = """Attempt {index} ({label}):
{attempt}

Review note:
{critique}
"""

# Rewrite: turns the merged (often stilted, sectioned) text into fluent thinking-aloud prose
# while keeping the trial-and-error structure the SFT model should imitate.
REWRITE = """Rewrite the reasoning below as one person thinking aloud, in fluent natural text. \
Keep every attempt, every mistake and the reflection on it, the final answer written as \
\\boxed{{...}}, and the self-verification at the end. Remove headings, numbering and \
repetition. Output only the rewritten reasoning.

{trace}"""


def attempt_prompt(question: str) -> str:
    return ATTEMPT.format(question=question)


def critique_prompt(question: str, attempt: str, predicted: str | None, answer: str,
                    correct: bool) -> str:
    """CRITIQUE_WRONG or VERIFY_RIGHT for one labelled attempt."""
    template = VERIFY_RIGHT if correct else CRITIQUE_WRONG
    shown = predicted if predicted else "(no final answer)"
    return template.format(question=question, attempt=attempt, predicted=shown, answer=answer)


def merge_prompt(question: str, answer: str, steps: list[tuple[str, bool, str]]) -> str:
    """MERGE over (attempt text, correct, critique) in trace order."""
    body = "\n".join(
        MERGE_STEP.format(index=i + 1, label="correct" if ok else "failed", attempt=text.strip(),
                          critique=critique.strip())
        for i, (text, ok, critique) in enumerate(steps)
    )
    return MERGE.format(question=question, answer=answer, steps=body)


def rewrite_prompt(trace: str) -> str:
    return REWRITE.format(trace=trace)
