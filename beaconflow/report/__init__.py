"""The run's outcome for people and tools: the report's counts, report.html, the dead letter."""
