"""Moved to `circuitbench.corpus` (running reads corpora too, and never imports training code)."""

from circuitbench.corpus import DEFAULT_EXCLUDE, Corpus, SourceFile, collect_corpus, corpus_hash, default_root

__all__ = ["DEFAULT_EXCLUDE", "Corpus", "SourceFile", "collect_corpus", "corpus_hash", "default_root"]
