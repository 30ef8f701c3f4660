"""The command line: the ``reelrank`` command (:mod:`.main`) and what every entry point shares
(:mod:`.bootstrap`: logging, arguments, config, the SparkSession and the jobs' bodies). Kept light: importing
the package imports neither."""
