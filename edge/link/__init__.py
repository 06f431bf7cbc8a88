"""edge/link: the durable spool and the DEALER link to the cloud (see client.py for the protocol)."""
from edge.link.client import AuthRejectedError, EdgeLink, EncoderMismatchError, LinkError
from edge.link.spool import Spool

__all__ = ["EdgeLink", "Spool", "LinkError", "EncoderMismatchError", "AuthRejectedError"]
