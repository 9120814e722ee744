"""``forkwire calc``: a file of expressions evaluated on the server, answers in input order."""
