"""forkwire server: listeners, job runner, interpreter, ingest, storage, analytics."""
