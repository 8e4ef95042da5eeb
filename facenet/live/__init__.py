"""Live deployment: camera streams with reconnect (`streams`), face tracks (`tracking`), several cameras in one
process (`cameras`), and events with snapshots, MQTT and webhooks (`events`)."""
