"""Task definitions (data, not code), GLUE readers and metrics."""
