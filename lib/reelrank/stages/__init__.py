"""The nightly's stages, one module each, every one declaring its :class:`~reelrank.catalog.Stage` as ``STAGE``
beside its function ``run(io, cfg, **inputs) -> Result``; :data:`reelrank.catalog.STAGE_NAMES` gives their order."""
