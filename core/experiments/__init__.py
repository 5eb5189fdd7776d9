"""Experiments: compositions of stages. `demo` (the embedded pipeline end to end) and
`reproduce` (T1's claims over several seeds)."""
