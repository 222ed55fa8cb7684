"""Storage: result units as Parquet (schema, atomic writes, reads that check the version), summaries, reports.

`files` (atomic, group-readable writes), `schema` (the tables, declared once), `store` (units and summaries),
`report` (headline, comparisons, the methods table), `plots`. The storage side: it holds no algorithm.
"""
