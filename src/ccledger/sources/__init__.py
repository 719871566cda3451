"""Turn outside data (transcripts, API responses, telemetry) into UsageRecords."""
