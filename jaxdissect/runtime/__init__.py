"""How experiments run: sharding over local devices (``devices``) and content-keyed,
atomically written caches (``cache``)."""
