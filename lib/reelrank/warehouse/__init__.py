"""The warehouse: where a night's tables are written, published at once, checked and read back.

Paths and filesystems (:mod:`.storage`), the one-process lock (:mod:`.runlock`), atomic publishing (:mod:`.publishing`),
the readers' manifest (:mod:`.manifest`), DuckDB reads without Spark (:mod:`.fastread`) and the Thrift SQL server
(:mod:`.sqlserver`)."""
