"""The Celery adapter: receives document ids and runs the core ingestion pipeline."""
