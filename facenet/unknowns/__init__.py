"""The faces seen but not known: online grouping of their sightings into strangers (`grouping`)."""
