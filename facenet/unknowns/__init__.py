"""The faces it saw but did not know: sightings of strangers, grouped by person, to be named, ignored or forgotten."""
