"""``forkwire sensors``: a fleet of sensors streaming readings through one outbox and network."""
