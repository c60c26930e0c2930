"""The archive of every request, score and decision, as Parquet files, and the tools that read it.

``layout`` knows the folder layout and the table schemas (from ``schemas/archive/*.avsc``);
``tables`` defines the same tables in Flink SQL for the jobs that write them (archive, replay);
``sql`` runs SQL over the files with an embedded DuckDB (``rendezvous sql``); ``metrics``
holds the pure comparisons behind ``rendezvous report`` (``report``), drawn by ``render``.
"""
