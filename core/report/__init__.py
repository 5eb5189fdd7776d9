"""Presentation: charts, the HTML page builder, the demo's and reproduce's reports, and the data
shaping of the dashboard's views. Used by stages, experiments, notebooks and the app; torch-free."""
