"""The storage side: units, results, saved circuits and their files, knowing no algorithm.

`unit` (`UnitSettings`, `Unit`, `UnitResult`, the statuses), `circuit` (a saved circuit and its edge table),
`mib` (MIB's circuit format), `schema` (the Parquet tables, declared once), `store` (units and summaries,
written atomically, read with a version check), `report` (headline, comparisons, the methods table, label
notes), `plots`, `files` (atomic writes). May import the ground floor only (`errors`, `files`,
`validation`, `protocols`): the circuits side builds these types, storage never calls it.
"""
