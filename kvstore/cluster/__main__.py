"""``python -m kvstore.cluster``: exit 0 when the server binaries of every engine the harness runs are installed.

``make test`` runs it to decide whether it must install them first.
"""

import sys

from kvstore.cluster.binaries import MissingBinaries
from kvstore.cluster.servers import SERVERS

try:
    for kind in SERVERS.values():
        kind.find_binaries()
except MissingBinaries as error:
    print(error, file=sys.stderr)
    sys.exit(1)
