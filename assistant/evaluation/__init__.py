"""Evaluation: retrieval on a BEIR-layout set, answers on a SQuAD-style question set.

Both run the product's own pipeline (upload, ingest, retrieve, answer) in a fresh temporary
data directory, so the user's documents, index and database are never touched.

`retrieval` and `qa` are the two runners; `datasets` reads their input files, `metrics` scores
them, `scratch` runs the product in a throw-away data directory and `report` prints a table.
"""
