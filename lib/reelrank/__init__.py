"""reelrank: a nightly batch recommender for entertainment catalogues on Apache Spark."""

__version__ = "0.1.0"
