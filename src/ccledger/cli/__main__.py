"""``python -m ccledger.cli`` runs the same command as the ``ccledger`` script."""

from ccledger.cli.fast import console

console()
