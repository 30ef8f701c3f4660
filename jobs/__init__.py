"""spark-submit entry points, one file per job (also installed as ``reelrank.jobs``, so a wheel install can
submit ``python -c "import reelrank.jobs.nightly as j; print(j.__file__)"``)."""
