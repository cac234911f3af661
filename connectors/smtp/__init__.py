"""The SMTP connector: a server that takes mail for the support domains in."""
