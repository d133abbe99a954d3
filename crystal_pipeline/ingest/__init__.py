"""Ingest: the raw archive's layout, decoding, file ingest, annotations, consensus, data-quality rules and the incoming folder."""
