"""`python -m lab reproduce`: T1's claims on the embedded task, several seeds each, one command.

`plan` lists the sub-runs, `ledger` records their folders (a rerun of the same folder skips the
finished ones) and builds the report, `claims` turns their per-problem rows into verdicts with
the paired tests of `paired` (both torch-free: notebooks read them), `runner` is the command's
story and preflight (sub-runs in worker processes); core.report.reproduce writes report.html
and report.json.
"""
