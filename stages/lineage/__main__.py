"""`python -m stages.lineage ...`"""

from stages.lineage.cli import app

app()
