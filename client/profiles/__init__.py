"""``forkwire profiles``: Faker profiles generated, filtered, spooled and sent, three processes."""
