"""Coreference resolution support: CoNLL-2012 files, the hub layout, subword alignment, span\ndecoding with union-find, and the scorer (docs/methods.md §9)."""
