"""Commands as pipelines of shared phases (:mod:`.phases`): ``check`` is :mod:`.check`."""
