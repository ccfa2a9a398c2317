"""The ``rpu`` command: one module per group of sub-commands. Nothing else imports it.
"""
