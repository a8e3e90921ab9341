"""How experiments run: the sweep driver (``sweep``: a statistic over a source, on
every local device of every process, resumable), sharding over local devices
(``devices``), several processes on ``jax.distributed`` (``hosts``), content
fingerprints (``fingerprint``) and content-keyed, atomically written caches
(``cache``)."""
