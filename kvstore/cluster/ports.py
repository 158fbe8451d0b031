"""Pick free TCP ports for the servers we are about to start."""

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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR, as servers set it: a port whose old connections linger in
    TIME_WAIT counts as free, one with a listener (on any address) does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
