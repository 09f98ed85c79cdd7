"""Pipeline stages: one module per DVC stage, plus shared helpers in stages.lib."""
