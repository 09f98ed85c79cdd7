"""`python -m stages.report`: write reports/report.html and reports/summary.md."""

from stages.lib.errors import run_stage
from stages.report.render import main

run_stage(main)
