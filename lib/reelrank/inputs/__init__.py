"""Sources of input: reading interactions from files or the synthetic generator, and validating them.

Readers per source kind (:mod:`.sources`, with the file helpers of :mod:`.filesystem`), the synthetic catalogue
(:mod:`.synthetic`) and row validation with a reason for every rejected row (:mod:`.ingest`)."""
