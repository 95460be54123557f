"""Console entry points: peftlab-train, peftlab-count, peftlab-report."""
