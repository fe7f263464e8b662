"""The command line: ``main`` parses, ``events`` talks to the admin API,
``render`` prints for humans, ``echo`` is the demo backend. The top of the
house: it may import anything, and picks the process role for ``serve``."""
