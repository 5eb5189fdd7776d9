"""LLM-teacher synthesis of trial-and-error traces for math tasks (T1 section 1), and import
of the public T1 SFT data. Torch is imported only when a transformers teacher is opened."""
