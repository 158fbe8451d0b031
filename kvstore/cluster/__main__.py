"""``python -m kvstore.cluster``: exit 0 when PostgreSQL and MariaDB server binaries are installed.

``make test`` runs it to decide whether it must install them first.
"""

import sys

from kvstore.cluster.binaries import MissingBinaries, find_mariadb_binaries, find_postgres_binaries

try:
    find_postgres_binaries()
    find_mariadb_binaries()
except MissingBinaries as error:
    print(error, file=sys.stderr)
    sys.exit(1)
