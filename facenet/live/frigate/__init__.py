"""Beside Frigate (the NVR): its person events recognised, the name written back as the event's sub label, our own
events published (facenet.live.events), strangers kept (facenet.unknowns). `api` speaks Frigate's HTTP API (light:
the command line checks URLs with it), `messages` reads its MQTT events, `watcher` recognises them, `bridge`
subscribes and runs the loop."""
