"""`python -m lab reproduce`: T1's claims on the embedded task, several seeds each, one command.

`plan` lists the sub-runs, `ledger` runs them and gathers their figures (a rerun of the same
folder skips the finished ones), `claims` turns figures into verdicts (torch-free: notebooks
read it), `runner` is the command's story and preflight; core.report.reproduce writes
report.html and report.json.
"""
