"""Prospectus text features: key-information extraction, BERT embedding, PCA per section.

Reading order: config (what can be set) -> io (reading the prospectus table and the split)
-> tokens / extractive / prompts (turning a section into at most 510 BERT tokens)
-> extract (the three extraction backends as Ray Data stages) -> embed (BERT or the
scikit-learn fallback as a Ray Data stage) -> cache (content-hash store, resumable)
-> reduce (PCA 40 per section, fitted on training firms) -> pipeline (the wiring).
"""
