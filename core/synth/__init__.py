"""Making training data (T1 section 1): the embedded task's programmatic teacher
(`programmatic`) and LLM teachers or public data for math (`teacher/`)."""
