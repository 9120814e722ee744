"""``forkwire replay``: a CSV file replayed as one sensor on the fleet."""
