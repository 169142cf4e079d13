"""Where a sweep's files live: local disk or object storage."""
