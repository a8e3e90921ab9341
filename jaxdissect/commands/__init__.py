"""One module per ``jaxdissect`` sub-command (see ``jaxdissect.cli``)."""
