"""Compliance documents made from a verified bundle: a CycloneDX ML-BOM, EU AI Act Annex IV and XI
technical documentation, the training-content summary and a data provenance register (write.py)."""
