"""``python -m ccledger.cli`` runs the same command as the ``ccledger`` script."""

from ccledger.cli.main import run

run()
