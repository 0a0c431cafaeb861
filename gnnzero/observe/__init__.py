"""Per-rank memory and throughput measurement, reports and plots."""
