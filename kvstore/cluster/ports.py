"""Pick a free TCP port for a server we are about to start."""

import socket


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0), so it avoids the standard ports of any
    system PostgreSQL/MariaDB/Redis. The port is released before returning, so
    another process could grab it before our server binds it; the server then
    fails to start and says so in its log, which ``start()`` reports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
