"""The results store: records as parquet parts, the fingerprint that says which records
may share a folder, and the manifest of provenance."""
