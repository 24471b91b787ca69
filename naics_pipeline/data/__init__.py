"""Source files -> descriptions -> graph -> distances -> triplets, and the checks over them.

Import the submodules: the table builders need DuckDB, which the training machine lacks, while
`naics_pipeline.data.descriptions` and `distances` (read by training) need only pyarrow and numpy.
"""
