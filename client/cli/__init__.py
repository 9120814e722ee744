"""The ``forkwire`` command line: the app and its shared options (``app``), the commands
registered in order (``main``), and one module per command."""
