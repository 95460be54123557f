"""Run records (metrics.json), aggregation, tables and plots."""
